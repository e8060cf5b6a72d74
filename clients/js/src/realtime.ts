// Realtime over the stock socket.io-client: logs in with the access token (or the
// session cookie), renews it on the open connection before it expires, and after any
// reconnect — a network drop, its instance killed, a deploy — joins every workspace
// again with the last `seq` it delivered, so the app gets every chat message once, in
// order, or is told to reload (docs/realtime.md, "Guarantees").

import { io, type ManagerOptions, type Socket, type SocketOptions } from "socket.io-client";

import { type Auth, SessionEndedError } from "./auth.js";
import type { components } from "./generated/api.js";

type Schemas = components["schemas"];

/** Every server → client event, by name, with its data (from Shoal's `ServerEvent`). */
export type ServerEvents = {
  [E in Schemas["ServerEvent"] as E["event"]]: E["data"];
};
export type Message = Schemas["Message"];
export type JoinAck = Schemas["JoinAck"];
export type SendAck = Schemas["SendAck"];
export type Resync = Schemas["Resync"];

/** What the client tells the app, beside the server's events. */
export interface ClientEvents {
  /** A chat message: each once per workspace, in `seq` order, across reconnects. */
  message: Message;
  /**
   * More was missed than the server replays (or the broker lost messages beyond what
   * it repairs): reload the workspace's history over REST; delivery carries on after
   * `lastSeq`.
   */
  reload: { workspaceId: string; lastSeq: number };
  /** The connection is up (again) and every workspace re-joined. */
  connected: { rejoined: JoinAck[] };
  /** The connection dropped; the client reconnects by itself. */
  disconnected: { reason: string };
  /** The login ended (logout, revoked, refresh refused): log in again. */
  sessionEnded: { reason: string };
  /** The open connection now lasts until `expiresAt` (after `auth:renew`). */
  renewed: { expiresAt: string };
}

type Events = ClientEvents & Omit<ServerEvents, "message:new">;
type Handler<T> = (data: T) => void;

/** A refused event: Shoal's `{ok: false, error: {code, message}}`. */
export class RealtimeError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`${code}: ${message}`);
    this.name = "RealtimeError";
  }
}

export interface RealtimeOptions {
  /** Shoal's (or the load balancer's) base URL; default: the page's origin. */
  url?: string;
  /** Passed to `io()` as they are (transports, reconnection delays, …). */
  socket?: Partial<ManagerOptions & SocketOptions>;
  /** How long an event waits for its ack before it is sent again (default 10 s). */
  ackTimeoutMs?: number;
}

interface Joined {
  /** The last `seq` delivered to the app; null until the first join's ack. */
  lastSeq: number | null;
  /** The join being sent, if any: one at a time per workspace. */
  inflight: Promise<JoinAck> | null;
}

/** How many times `send` tries before it gives up (each after a reconnect, a timeout
 * or a rate limit). */
const SEND_ATTEMPTS = 8;
/** The pause before an event refused with `service_unavailable` or `busy` is sent again. */
const RETRY_DELAY_MS = 500;

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The realtime connection of one login. Create it after logging in (`auth`), join
 * workspaces, listen with `on`.
 */
export class ShoalRealtime {
  readonly socket: Socket;
  #auth: Auth | null;
  #joined = new Map<string, Joined>();
  #handlers = new Map<string, Set<Handler<never>>>();
  #ackTimeout: number;
  #renewTimer: ReturnType<typeof setTimeout> | null = null;
  #renewing = false;
  #unsubscribe: (() => void) | null = null;
  #closed = false;

  /** `auth` null: the browser's session cookie authenticates the connection. */
  constructor(auth: Auth | null, options: RealtimeOptions = {}) {
    this.#auth = auth;
    this.#ackTimeout = options.ackTimeoutMs ?? 10_000;
    const url = options.url ?? auth?.baseUrl;
    const socketOptions: Partial<ManagerOptions & SocketOptions> = {
      withCredentials: auth === null,
      ...options.socket,
      // Asked again before every (re)connect, so a reconnect carries a fresh token.
      auth: (cb: (data: object) => void) => {
        if (!this.#auth) return cb({});
        this.#auth.token().then(
          (token) => cb({ token }),
          () => cb({}),
        );
      },
    };
    this.socket = url === undefined ? io(socketOptions) : io(url, socketOptions);
    this.socket.on("connect", () => void this.#rejoin());
    this.socket.on("disconnect", (reason) => {
      this.#emit("disconnected", { reason });
      // The stock client reconnects by itself except when the server closed the
      // socket (its token expired unrenewed, a drain): then we do, with a fresh token.
      if (reason === "io server disconnect" && !this.#closed) this.socket.connect();
    });
    this.socket.on("connect_error", (err) => void this.#refused(err));
    this.socket.on("message:new", (m: Message) => this.#deliver(m));
    this.socket.on("resync", (r: Resync) => this.#reload(r.workspace_id, r.last_seq));
    this.socket.on("session:ended", (e: ServerEvents["session:ended"]) => void this.#sessionEnded(e.reason));
    this.socket.onAny((event: string, data: unknown) => {
      if (event !== "message:new" && event !== "resync") this.#emit(event as keyof Events, data as never);
    });
    if (auth) {
      // A new token (a refresh made for a REST call, say) goes to the connection at
      // once: it may have been opened with the one that is about to expire.
      this.#unsubscribe = auth.onChange((tokens) => tokens && void this.#renew());
      this.#scheduleRenew();
    }
  }

  /** Listens to a client event or a server event (for chat messages use `message`). */
  on<E extends keyof Events>(event: E, handler: Handler<Events[E]>): () => void {
    let set = this.#handlers.get(event);
    if (!set) this.#handlers.set(event, (set = new Set()));
    set.add(handler as Handler<never>);
    return () => set.delete(handler as Handler<never>);
  }

  /**
   * Joins a workspace's room; from now on its messages arrive on `message`, also
   * after reconnects. `sinceSeq`: the last message the app has (for example from
   * `GET /api/workspaces/{wid}/messages`); the ones after it are delivered first.
   * Without it, delivery starts at the newest message.
   */
  async join(workspaceId: string, sinceSeq?: number): Promise<JoinAck> {
    const joined: Joined = { lastSeq: sinceSeq ?? null, inflight: null };
    this.#joined.set(workspaceId, joined);
    return this.#joinOnce(workspaceId, joined);
  }

  /** Leaves a workspace's room. */
  async leave(workspaceId: string): Promise<void> {
    this.#joined.delete(workspaceId);
    if (this.socket.connected) await this.#call("workspace:leave", { workspace_id: workspaceId });
  }

  /**
   * Sends a chat message; resolves once it is committed. A send interrupted by a
   * reconnect or a lost ack is sent again with the same `clientId`, which the server
   * answers with the original message: never posted twice.
   */
  async send(workspaceId: string, body: string, clientId: string = crypto.randomUUID()): Promise<SendAck> {
    for (let attempt = 1; ; attempt++) {
      await this.#connected();
      try {
        return (await this.#call("message:send", {
          workspace_id: workspaceId,
          body,
          client_id: clientId,
        })) as SendAck;
      } catch (e) {
        if (!(e instanceof Retry) || attempt >= SEND_ATTEMPTS) throw e instanceof Retry ? e.cause : e;
        if (this.socket.connected) await delay(e.afterMs);
      }
    }
  }

  /** Tells the others in the workspace that this user is typing. */
  typing(workspaceId: string): void {
    if (this.socket.connected) this.socket.emit("typing", { workspace_id: workspaceId });
  }

  /** Who is online in a workspace (on any instance). */
  async presence(workspaceId: string): Promise<string[]> {
    const ack = (await this.#call("presence:list", { workspace_id: workspaceId })) as {
      users: { user_id: string }[];
    };
    return ack.users.map((u) => u.user_id);
  }

  /** The last `seq` delivered for a workspace (null before its first join). */
  lastSeq(workspaceId: string): number | null {
    return this.#joined.get(workspaceId)?.lastSeq ?? null;
  }

  /** Closes the connection for good. */
  close(): void {
    this.#closed = true;
    if (this.#renewTimer) clearTimeout(this.#renewTimer);
    this.#unsubscribe?.();
    this.socket.close();
  }

  #emit<E extends keyof Events>(event: E, data: Events[E]): void {
    for (const handler of this.#handlers.get(event) ?? []) {
      (handler as Handler<Events[E]>)(data);
    }
  }

  #deliver(m: Message): void {
    const joined = this.#joined.get(m.workspace_id);
    if (!joined) return;
    // A replay after a reconnect may repeat what arrived just before the drop.
    if (joined.lastSeq !== null && m.seq <= joined.lastSeq) return;
    joined.lastSeq = m.seq;
    this.#emit("message", m);
  }

  #reload(workspaceId: string, lastSeq: number): void {
    const joined = this.#joined.get(workspaceId);
    if (!joined) return;
    joined.lastSeq = lastSeq;
    this.#emit("reload", { workspaceId, lastSeq });
  }

  async #join(workspaceId: string, joined: Joined): Promise<JoinAck> {
    const request: { workspace_id: string; since_seq?: number } = { workspace_id: workspaceId };
    if (joined.lastSeq !== null) request.since_seq = joined.lastSeq;
    const ack = (await this.#call("workspace:join", request)) as JoinAck;
    if (this.#joined.get(workspaceId) !== joined) return ack;
    if (!ack.recovered) {
      this.#reload(workspaceId, ack.last_seq);
    } else if (joined.lastSeq === null || joined.lastSeq < ack.last_seq) {
      // A first join starts at the head; a resume has delivered up to it already.
      joined.lastSeq = ack.last_seq;
    }
    return ack;
  }

  /** Joins until it is answered (across reconnects); concurrent callers share it. */
  #joinOnce(workspaceId: string, joined: Joined): Promise<JoinAck> {
    joined.inflight ??= (async () => {
      try {
        for (;;) {
          await this.#connected();
          try {
            return await this.#join(workspaceId, joined);
          } catch (e) {
            if (!(e instanceof Retry)) throw e;
            if (this.socket.connected) await delay(e.afterMs);
          }
        }
      } finally {
        joined.inflight = null;
      }
    })();
    return joined.inflight;
  }

  async #rejoin(): Promise<void> {
    const acks = await Promise.allSettled(
      [...this.#joined].map(([workspaceId, joined]) => this.#joinOnce(workspaceId, joined)),
    );
    const rejoined = acks.flatMap((a) => (a.status === "fulfilled" ? [a.value] : []));
    this.#scheduleRenew();
    this.#emit("connected", { rejoined });
  }

  async #refused(err: Error): Promise<void> {
    // The stock client retries by itself after a transport error (socket.active);
    // after a refusal by the server it stops, and the reason is in `message`.
    if (this.socket.active || this.#closed) return;
    if (err.message === "token_expired" && this.#auth) {
      try {
        await this.#auth.refresh();
      } catch (e) {
        return this.#sessionEnded(e instanceof SessionEndedError ? e.reason : "refresh_failed");
      }
      this.socket.connect();
    } else if (["unauthorized", "invalid_token", "session_expired"].includes(err.message)) {
      await this.#sessionEnded(err.message);
    } else {
      // too_many_connections, service_unavailable, …: try again a little later.
      setTimeout(() => this.#closed || this.socket.connect(), 1000);
    }
  }

  async #sessionEnded(reason: string): Promise<void> {
    if (reason === "token_expired" && this.#auth?.loggedIn) {
      // The socket outlived its token (renewal missed, e.g. a sleeping laptop): the
      // login is fine, the next connection carries a fresh token.
      return;
    }
    this.#auth?.forget();
    this.close();
    this.#emit("sessionEnded", { reason });
  }

  #scheduleRenew(): void {
    if (this.#renewTimer) clearTimeout(this.#renewTimer);
    const auth = this.#auth;
    if (!auth?.loggedIn || this.#closed) return;
    // setTimeout takes at most a 32-bit delay.
    const due = Math.min(auth.refreshDueIn(), 2 ** 31 - 1);
    this.#renewTimer = setTimeout(() => void this.#renew(), due);
  }

  async #renew(): Promise<void> {
    const auth = this.#auth;
    if (!auth || this.#closed || this.#renewing) return;
    this.#renewing = true;
    try {
      const token = await auth.token();
      if (this.socket.connected) {
        const ack = (await this.#call("auth:renew", { token })) as Schemas["RenewAck"];
        this.#emit("renewed", { expiresAt: ack.expires_at });
      }
    } catch (e) {
      if (e instanceof SessionEndedError) {
        this.#renewing = false;
        return this.#sessionEnded(e.reason);
      }
      // Refused or not answered: the connection ends at expiry and the reconnect
      // carries a fresh token.
    }
    this.#renewing = false;
    this.#scheduleRenew();
  }

  /** Waits until the socket is connected. */
  #connected(): Promise<void> {
    if (this.socket.connected) return Promise.resolve();
    if (this.#closed) return Promise.reject(new Error("the realtime client is closed"));
    return new Promise((resolve) => this.socket.once("connect", () => resolve()));
  }

  /** Emits with an ack; `Retry` when the connection dropped or the ack did not come. */
  async #call(event: string, payload: object): Promise<unknown> {
    let ack: { ok: boolean; error?: { code: string; message: string; retry_after_ms?: number } };
    try {
      ack = await this.socket.timeout(this.#ackTimeout).emitWithAck(event, payload);
    } catch (e) {
      throw new Retry(e);
    }
    if (!ack.ok) {
      const code = ack.error?.code ?? "error";
      const refused = new RealtimeError(code, ack.error?.message ?? "");
      if (code === "rate_limited" && ack.error?.retry_after_ms !== undefined) {
        // Over the socket's event rate: sent again when it would be accepted.
        throw new Retry(refused, ack.error.retry_after_ms);
      }
      if (code === "service_unavailable" || code === "busy") throw new Retry(refused);
      throw refused;
    }
    return ack;
  }
}

/** An event that may succeed when sent again (after a reconnect, or `afterMs`). */
class Retry extends Error {
  constructor(
    override readonly cause: unknown,
    readonly afterMs: number = RETRY_DELAY_MS,
  ) {
    super("retry");
  }
}
