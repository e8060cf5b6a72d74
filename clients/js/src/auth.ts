// The login of one user: its access token, the refresh token that rotates with every
// refresh, and the single refresh in flight that concurrent callers share.

import type { components } from "./generated/api.js";

export type LoginResponse = components["schemas"]["LoginResponse"];
export type TokenPair = components["schemas"]["TokenPair"];

/** Where a login's tokens can be kept between page loads (for example localStorage). */
export interface TokenStore {
  load(): StoredTokens | null;
  save(tokens: StoredTokens | null): void;
}

/** What a login consists of, as a store keeps it. */
export interface StoredTokens {
  accessToken: string;
  refreshToken: string;
  /** When the access token expires, in milliseconds since the epoch. */
  expiresAt: number;
  /** When to refresh it: a minute before it expires, or halfway for a short one. */
  refreshAt?: number;
}

/** Why a login ended. */
export class SessionEndedError extends Error {
  constructor(readonly reason: string) {
    super(`the login ended: ${reason}`);
    this.name = "SessionEndedError";
  }
}

/** Refresh this long before the access token expires (or at half its life if shorter). */
const REFRESH_MARGIN_MS = 60_000;

/**
 * Holds one login's tokens. `token()` always answers a token that is valid for a
 * while: it refreshes first when the current one is about to expire, and several
 * callers at once share one refresh (a refresh token is single use: two refreshes
 * with the same token would make the server revoke the whole login).
 */
export class Auth {
  #tokens: StoredTokens | null;
  #refreshing: Promise<string> | null = null;
  #listeners = new Set<(tokens: StoredTokens | null) => void>();

  constructor(
    readonly baseUrl: string,
    private readonly store: TokenStore | null = null,
    private readonly fetchImpl: typeof fetch = globalThis.fetch.bind(globalThis),
  ) {
    this.#tokens = store?.load() ?? null;
  }

  /** Whether there is a login. */
  get loggedIn(): boolean {
    return this.#tokens !== null;
  }

  /** The current tokens (for a store or a test). */
  get tokens(): StoredTokens | null {
    return this.#tokens;
  }

  /** Called with the new tokens after a login or refresh, and with null after it ended. */
  onChange(listener: (tokens: StoredTokens | null) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Takes over a login answered by `POST /api/auth/login` or `/register` + login. */
  accept(pair: TokenPair | LoginResponse): void {
    const now = Date.now();
    const lifetime = pair.expires_in * 1000;
    this.#set({
      accessToken: pair.access_token,
      refreshToken: pair.refresh_token,
      expiresAt: now + lifetime,
      refreshAt: now + lifetime - Math.min(REFRESH_MARGIN_MS, lifetime / 2),
    });
  }

  /** Logs in with a password. */
  async login(email: string, password: string): Promise<LoginResponse> {
    const response = await this.fetchImpl(`${this.baseUrl}/api/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email, password }),
    });
    const body = await response.json();
    if (!response.ok) {
      throw new ApiError(response.status, body);
    }
    this.accept(body as LoginResponse);
    return body as LoginResponse;
  }

  /** Ends the login on the server and forgets it here. */
  async logout(): Promise<void> {
    const token = this.#tokens?.accessToken;
    this.#set(null);
    if (token) {
      await this.fetchImpl(`${this.baseUrl}/api/auth/logout`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
      }).catch(() => undefined);
    }
  }

  /** Forgets the login without telling the server (it ended there already). */
  forget(): void {
    this.#set(null);
  }

  /** Milliseconds until the access token should be refreshed (0: now). */
  refreshDueIn(): number {
    const tokens = this.#tokens;
    if (!tokens) return Infinity;
    const at = tokens.refreshAt ?? tokens.expiresAt - REFRESH_MARGIN_MS;
    return Math.max(0, at - Date.now());
  }

  /** A valid access token, refreshed first when it is about to expire. */
  async token(): Promise<string> {
    const tokens = this.#tokens;
    if (!tokens) throw new SessionEndedError("logged_out");
    if (this.refreshDueIn() > 0) return tokens.accessToken;
    return this.refresh();
  }

  /** Exchanges the refresh token for a new pair (once, however many callers ask). */
  refresh(): Promise<string> {
    this.#refreshing ??= this.#doRefresh().finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  async #doRefresh(): Promise<string> {
    const tokens = this.#tokens;
    if (!tokens) throw new SessionEndedError("logged_out");
    const response = await this.fetchImpl(`${this.baseUrl}/api/auth/refresh`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: tokens.refreshToken }),
    });
    const body = await response.json().catch(() => null);
    if (response.status === 401) {
      // Expired, revoked or reused: this login is over; only a new login helps.
      this.#set(null);
      throw new SessionEndedError(body?.error?.code ?? "refresh_refused");
    }
    if (!response.ok) {
      throw new ApiError(response.status, body);
    }
    // Another login may have replaced this one while the request was in flight.
    if (this.#tokens === tokens) this.accept(body as TokenPair);
    return (body as TokenPair).access_token;
  }

  #set(tokens: StoredTokens | null): void {
    this.#tokens = tokens;
    this.store?.save(tokens);
    for (const listener of this.#listeners) listener(tokens);
  }
}

/** Shoal's error answer: `{"error": {"code", "message", "request_id"}}`. */
export class ApiError extends Error {
  readonly code: string;
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    const error = (body as { error?: { code?: string; message?: string } } | null)?.error;
    super(`${status} ${error?.code ?? "error"}: ${error?.message ?? ""}`);
    this.name = "ApiError";
    this.code = error?.code ?? "error";
  }
}
