// Typed REST calls: openapi-fetch over the types openapi-typescript generates from
// Shoal's OpenAPI document (src/generated/api.ts, `npm run generate`), with the
// login's access token on every call.

import createClient, { type Client, type Middleware } from "openapi-fetch";

import type { Auth } from "./auth.js";
import type { paths } from "./generated/api.js";

export type ShoalRest = Client<paths>;

/** Calls that must not carry (or wait for) the access token. */
const ANONYMOUS = new Set([
  "/api/auth/login",
  "/api/auth/register",
  "/api/auth/refresh",
  "/api/health",
  "/api/ready",
]);

/**
 * A REST client whose calls carry `auth`'s access token, refreshed before it expires;
 * a call answered 401 `token_expired` (a clock running late) is refreshed and sent once
 * more.
 */
export function createRest(auth: Auth, fetchImpl: typeof fetch = globalThis.fetch.bind(globalThis)): ShoalRest {
  const retries = new Map<string, Request>();
  const middleware: Middleware = {
    async onRequest({ request, schemaPath, id }) {
      if (ANONYMOUS.has(schemaPath) || !auth.loggedIn) return undefined;
      request.headers.set("authorization", `Bearer ${await auth.token()}`);
      retries.set(id, request.clone());
      return request;
    },
    async onResponse({ response, id }) {
      const retry = retries.get(id);
      retries.delete(id);
      if (response.status !== 401 || !retry) return undefined;
      const body = await response.clone().json().catch(() => null);
      if (body?.error?.code !== "token_expired") return undefined;
      retry.headers.set("authorization", `Bearer ${await auth.refresh()}`);
      return fetchImpl(retry);
    },
    onError({ id }) {
      retries.delete(id);
    },
  };
  const client = createClient<paths>({ baseUrl: auth.baseUrl, fetch: (r) => fetchImpl(r) });
  client.use(middleware);
  return client;
}
