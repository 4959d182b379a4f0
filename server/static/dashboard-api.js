// The dashboard's client of the /v1 JSON API (the same calls the CLI makes).
//
// The API key lives in sessionStorage: entered once, kept for this tab only, gone when
// the tab closes. Every /v1 request carries it as a bearer token.

const KEY_NAME = "lifelong.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY_NAME) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_NAME, key);
  else sessionStorage.removeItem(KEY_NAME);
}

/** An error answer of the API: its status, its message and any Retry-After seconds. */
export class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** The message of the API's uniform error body {"error": {"message": ...}}, if any. */
function errorMessage(body) {
  const message = body && body.error && body.error.message;
  return typeof message === "string" && message ? message : null;
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null; // an empty or non-JSON body (a proxy's error page, say)
  }
}

/** Call the API; resolves to the JSON body, rejects with an ApiError. */
export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, `the server did not answer (${error.message})`);
  }
  const data = await readJson(response);
  if (!response.ok) {
    const message = errorMessage(data) || `${response.status} ${response.statusText}`;
    const retry = Number(response.headers.get("Retry-After")) || undefined;
    throw new ApiError(response.status, message, retry);
  }
  return data;
}

// What one refresh reads; each entry becomes a field of the snapshot. The first one also
// serves to check a new key.
const READS = {
  active: "/v1/adapters/active",
  buckets: "/v1/buckets",
  teacher: "/v1/teacher",
  evaluations: "/v1/evaluations",
  adapters: "/v1/adapters",
  history: "/v1/adapters/history",
  learner: "/v1/learner",
};

/**
 * Read everything the page shows, in parallel. Resolves to {data, errors}: data holds
 * each read that succeeded (by name), errors the ApiErrors of those that failed, so one
 * failing endpoint does not blank the others. With ``checkKey`` (a key not used yet) one
 * read goes first: a wrong key then costs the server's failed-authentication limit one
 * failure, not one per endpoint.
 */
export async function readAll(checkKey = false) {
  const names = Object.keys(READS);
  const data = {};
  const errors = {};
  if (checkKey) {
    const first = names.shift();
    try {
      data[first] = await call("GET", READS[first]);
    } catch (error) {
      errors[first] = error;
      if (error.status === 401) return { data, errors };
    }
  }
  const results = await Promise.allSettled(names.map((n) => call("GET", READS[n])));
  results.forEach((result, i) => {
    if (result.status === "fulfilled") data[names[i]] = result.value;
    else errors[names[i]] = result.reason;
  });
  return { data, errors };
}

export function promote(version, force) {
  const body = force ? { force: true, reason: "promoted from the dashboard (forced)" }
    : { reason: "promoted from the dashboard" };
  return call("POST", `/v1/adapters/${encodeURIComponent(version)}/promote`, body);
}

export function rollback() {
  return call("POST", "/v1/adapters/rollback", { reason: "rolled back from the dashboard" });
}

export function learnerCommand(command) {
  return call("POST", `/v1/learner/${command === "pause" ? "pause" : "resume"}`);
}
