/** The Worker's bindings (wrangler.toml). Every var is a string; unset means the default. */
export interface Env {
  /** Cached responses (cf:...) and the yachts' generations (gen:{yacht_id}). */
  SEARCH_CACHE: KVNamespace;
  /** HS256, RS256 or ES256; tokens with any other alg are refused. Default HS256. */
  JWT_ALGORITHM?: string;
  /** HS256's shared secret, the origin's JWT_SECRET (a Worker secret, never a var). */
  JWT_SECRET?: string;
  /** RS256 / ES256: the issuer's JWK set, the origin's JWT_JWKS_URL. */
  JWT_JWKS_URL?: string;
  /** How long the JWK set is kept in an isolate (default 300, 10..86400). */
  JWT_JWKS_TTL_SECONDS?: string;
  /** Checked against aud / iss when set, as at the origin. */
  JWT_AUDIENCE?: string;
  JWT_ISSUER?: string;
  /** Clock skew tolerated on exp and nbf (default 30, 0..300), as at the origin. */
  JWT_LEEWAY_SECONDS?: string;
  /** The origin's SEARCH_DEFAULT_LIMIT (20): the limit of a search that names none. */
  SEARCH_DEFAULT_LIMIT?: string;
  /** The origin's FEEDBACK_MAX_QUERY_CHARS (200): a normalised query is cut to this. */
  FEEDBACK_MAX_QUERY_CHARS?: string;
}
