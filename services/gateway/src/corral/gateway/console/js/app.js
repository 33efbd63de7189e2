// The console: sign-in, and a hash router over the views. Each view gets the main element, the
// route's parameters and an AbortSignal that fires when the user navigates away (it ends the
// view's requests and live streams).

import { api, ApiError, auth } from "./api.js";
import { errorBox, h, replace } from "./dom.js";
import { agentView, agentsView } from "./views/agents.js";
import { environmentsView, keysView, vaultsView } from "./views/catalog.js";
import { sessionView } from "./views/session.js";
import { sessionsView } from "./views/sessions.js";
import { traceView } from "./views/trace.js";

const ROUTES = [
  [/^#\/sessions\/(sesn_\w+)\/trace(?:\/(\d+))?$/, traceView],
  [/^#\/sessions\/(sesn_\w+)$/, sessionView],
  [/^#\/sessions(?:\?(.*))?$/, sessionsView],
  [/^#\/agents\/(agent_\w+)$/, agentView],
  [/^#\/agents$/, agentsView],
  [/^#\/environments$/, environmentsView],
  [/^#\/vaults$/, vaultsView],
  [/^#\/keys$/, keysView],
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signOut = document.getElementById("sign-out");
let current = null;

function signInView() {
  const input = h("input", {
    type: "password",
    name: "api-key",
    autocomplete: "off",
    placeholder: "sk-corral-…",
    required: true,
    "aria-label": "API key",
  });
  const problem = h("div");
  const form = h(
    "form",
    { class: "card sign-in", onsubmit: (e) => submit(e) },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "With an API key of your workspace. It stays in this tab only."),
    input,
    h("button", { type: "submit" }, "Sign in"),
    problem,
  );
  async function submit(event) {
    event.preventDefault();
    auth.signIn(input.value.trim());
    try {
      await api("/v1/sessions", { query: { limit: 1 } });
    } catch (error) {
      auth.signOut();
      const message = error instanceof ApiError && error.status === 401 ? "That key was refused." : error.message;
      replace(problem, errorBox({ message }));
      return;
    }
    if (!location.hash || location.hash === "#/") location.hash = "#/sessions";
    else route();
  }
  replace(main, form);
  input.focus();
}

async function route() {
  current?.abort();
  current = new AbortController();
  const signedIn = Boolean(auth.key);
  nav.hidden = signOut.hidden = !signedIn;
  if (!signedIn) return signInView();
  const hash = location.hash || "#/sessions";
  for (const link of nav.querySelectorAll("a")) {
    link.classList.toggle("active", hash.startsWith(link.getAttribute("href")));
  }
  const found = ROUTES.map(([pattern, view]) => [hash.match(pattern), view]).find(([m]) => m);
  if (!found) {
    replace(main, errorBox({ message: `Nothing at ${hash}.` }), h("a", { href: "#/sessions" }, "Sessions"));
    return;
  }
  const [match, view] = found;
  const signal = current.signal;
  try {
    await view(main, match.slice(1), signal);
  } catch (error) {
    if (signal.aborted) return;
    if (error instanceof ApiError && error.status === 401) {
      auth.signOut();
      return route();
    }
    replace(main, errorBox(error));
  }
}

signOut.addEventListener("click", () => {
  auth.signOut();
  location.hash = "#/sessions";
  route();
});
window.addEventListener("hashchange", route);
route();
