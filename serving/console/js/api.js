// The one way the console talks to the API: the key from sessionStorage as a Bearer header (never in
// a URL), JSON in and out, and every error turned into an ApiError carrying the API's error model
// ({"error": {"code", "message"}}), which showError puts in the page's alert region.

const STORAGE = "rayfolio.api_key";
// API paths are resolved against the page's parent (/ui/ -> /): the console works under a route prefix.
const BASE = new URL("../", document.baseURI);

export const session = {
  get key() {
    return sessionStorage.getItem(STORAGE);
  },
  set key(value) {
    if (value) sessionStorage.setItem(STORAGE, value);
    else sessionStorage.removeItem(STORAGE);
  },
  admin: false, // learned from GET /v1/models at sign-in (and each page load)
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** fetch ``path`` (e.g. "v1/models") with the session's key; the parsed JSON, or an ApiError. */
export async function api(path, { method = "GET", body, query, key = session.key } = {}) {
  const url = new URL(path, BASE);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "network", `the service did not answer (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null; // a proxy's plain-text answer: its status is what we report
  }
  if (!response.ok) {
    const model = data && data.error;
    throw new ApiError(response.status, model ? model.code : `http_${response.status}`,
      model ? model.message : (text.slice(0, 200) || response.statusText));
  }
  return data;
}

const alertBox = () => document.getElementById("alert");

/** Show an error (an ApiError or any Error) in the page's alert region, and return it. */
export function showError(err) {
  const box = alertBox();
  const status = err instanceof ApiError && err.status ? `${err.status} ` : "";
  const code = err instanceof ApiError ? `${err.code}: ` : "";
  box.replaceChildren();
  const text = document.createElement("span");
  text.textContent = `${status}${code}${err.message}`;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "secondary small";
  close.textContent = "Dismiss";
  close.setAttribute("aria-label", "Dismiss the error");
  close.addEventListener("click", clearError);
  box.append(text, close);
  box.hidden = false;
  return err;
}

export function clearError() {
  const box = alertBox();
  box.hidden = true;
  box.replaceChildren();
}

/** Run ``work`` (async) with ``button`` disabled meanwhile; errors go to the alert region. */
export async function busy(button, work) {
  const label = button ? button.textContent : null;
  if (button) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
  }
  clearError();
  try {
    return await work();
  } catch (err) {
    showError(err);
    return undefined;
  } finally {
    if (button) {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      button.textContent = label;
    }
  }
}
