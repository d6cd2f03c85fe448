// The search page: a token, a search box, results, and each click posted to the API.
// The token stays in this tab's sessionStorage and goes only to this origin.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("f1.token") || "";
let lastSearch = null;

function say(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function api(path, init = {}) {
  const headers = { Authorization: `Bearer ${token}`, ...(init.headers || {}) };
  const response = await fetch(path, { ...init, headers });
  let body = null;
  try { body = await response.json(); } catch { /* an empty or non-JSON answer */ }
  if (!response.ok) {
    const detail = body && (body.error || (body.detail && body.detail.map(
      (d) => `${d.loc.join(".")}: ${d.msg}`).join("; ")));
    throw new Error(`${response.status} ${detail || response.statusText}`);
  }
  return body;
}

function signedIn() {
  $("q").disabled = !token;
  document.querySelector("#search button").disabled = !token;
  $("who").textContent = token ? "signed in" : "";
}

async function signIn(event) {
  event.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("f1.token", token);
  $("token").value = "";
  signedIn();
  try {
    await api("/api/f1/session", { method: "POST" });  // warms this yacht's cache
    say("Signed in.");
  } catch (error) {
    token = "";
    sessionStorage.removeItem("f1.token");
    signedIn();
    say(`Sign-in refused: ${error.message}`, true);
  }
}

async function search(event) {
  event.preventDefault();
  const q = $("q").value;
  say("Searching…");
  try {
    const started = performance.now();
    const params = new URLSearchParams({ q, limit: "20" });
    const body = await api(`/api/f1/search?${params}`);
    lastSearch = { id: body.search_id, query: q, at: new Date().toISOString() };
    show(body.results);
    const ms = Math.round(performance.now() - started);
    say(`${body.results.length} results in ${ms} ms${body.cached ? " (cached)" : ""}.`);
  } catch (error) {
    say(`Search failed: ${error.message}`, true);
  }
}

function show(results) {
  const list = $("results");
  list.replaceChildren();
  results.forEach((hit, index) => {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = "#";
    link.textContent = hit.snippet || `${hit.object_type} ${hit.object_id}`;
    link.dataset.objectType = hit.object_type;
    link.dataset.objectId = hit.object_id;
    link.addEventListener("click", (event) => click(event, hit, index + 1, item));
    const meta = document.createElement("div");
    meta.className = "meta";
    const score = hit.score === null ? "" : ` · score ${hit.score.toFixed(3)}`;
    meta.textContent = `${hit.object_type} · ${hit.object_id}${score}`;
    item.append(link, meta);
    list.append(item);
  });
}

async function click(event, hit, position, item) {
  event.preventDefault();
  const body = {
    search_id: lastSearch.id, query_text: lastSearch.query,
    clicked_object_type: hit.object_type, clicked_object_id: hit.object_id,
    click_position: position, search_timestamp: lastSearch.at,
  };
  try {
    await api("/api/analytics/search-click", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), keepalive: true,
    });
    const mark = document.createElement("span");
    mark.className = "clicked";
    mark.textContent = "click recorded";
    item.querySelector("a").after(mark);
  } catch (error) {
    say(`Click not recorded: ${error.message}`, true);
  }
}

$("signin").addEventListener("submit", signIn);
$("search").addEventListener("submit", search);
signedIn();
