// The console's shell: sign-in, the hash router (#/models, #/compare, ...), the navigation and the
// sign-out. Each page is a module exporting render(main, ctx); ctx.alive() turns false once the user
// has moved on, so a page's polling stops with it.

import { api, clearError, session, showError } from "./api.js";
import { destroyCharts } from "./charts.js";
import { field, h, replace } from "./dom.js";
import * as audit from "./pages/audit.js";
import * as backtest from "./pages/backtest.js";
import * as compare from "./pages/compare.js";
import * as models from "./pages/models.js";
import * as plan from "./pages/plan.js";
import * as recommend from "./pages/recommend.js";
import * as training from "./pages/training.js";

const PAGES = { models, compare, training, recommend, backtest, plan, audit };
const main = document.getElementById("main");
let generation = 0; // bumped on every route change: a page's ctx.alive() compares against it

/** "#/models/lstm-forecaster?x=1" -> {page: "models", args: ["lstm-forecaster"], query: URLSearchParams} */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = raw.split("?");
  const [page, ...args] = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: page || "models", args, query: new URLSearchParams(search) };
}

async function route() {
  generation += 1;
  const mine = generation;
  destroyCharts();
  clearError();
  if (!session.key) {
    showSignIn();
    return;
  }
  const { page, args, query } = parseHash();
  const module = PAGES[page];
  markCurrent(page);
  if (!module) {
    replace(main, h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/models" }, "Go to the models.")));
    return;
  }
  replace(main, h("p", { class: "muted" }, "Loading…"));
  const ctx = { args, query, admin: session.admin, alive: () => mine === generation };
  try {
    await module.render(main, ctx);
  } catch (err) {
    if (mine !== generation) return;
    if (err.status === 401) {
      signOut("Your key was refused (401): sign in again.");
      return;
    }
    replace(main, h("h1", {}, module.TITLE || page), h("p", { class: "muted" }, "This page could not be loaded."));
    showError(err);
  }
}

function markCurrent(page) {
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === `#/${page}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

/** Check a key with GET /v1/models (any valid key may call it; it says whether the key is an admin). */
async function signIn(key) {
  const data = await api("v1/models", { key });
  session.key = key;
  session.admin = Boolean(data.admin);
  showSession();
}

function showSession() {
  const signedIn = Boolean(session.key);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("session").hidden = !signedIn;
  document.getElementById("role").textContent = session.admin ? "admin key" : "user key";
  for (const link of document.querySelectorAll("#nav [data-admin]")) link.parentElement.hidden = !session.admin;
}

function signOut(message) {
  session.key = null;
  session.admin = false;
  showSession();
  destroyCharts();
  showSignIn();
  if (message) showError(new Error(message));
}

function showSignIn() {
  const input = h("input", { type: "password", name: "api_key", autocomplete: "off", required: true, spellcheck: "false" });
  const submit = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { class: "card narrow", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    h("p", {}, "Enter your rayfolio API key. It is kept in this browser tab only (sessionStorage) and sent as a "
      + "Bearer header, never in a URL."),
    field("API key", input),
    h("div", { class: "actions" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    clearError();
    try {
      await signIn(input.value.trim());
      if (!location.hash || location.hash === "#/" || location.hash === "#/signin") location.hash = "#/models";
      else await route();
    } catch (err) {
      showError(err.status === 401 ? Object.assign(err, { message: `${err.message} (check the key)` }) : err);
      input.focus();
    } finally {
      submit.disabled = false;
    }
  });
  replace(main, form);
  input.focus();
}

async function start() {
  document.getElementById("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", route);
  if (session.key) {
    try {
      await signIn(session.key); // the role again, and whether the key still works
    } catch (err) {
      signOut(err.status === 401 ? "Your key was refused (401): sign in again." : null);
      if (err.status !== 401) showError(err);
      return;
    }
  }
  await route();
}

start();
