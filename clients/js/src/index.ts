// Shoal's client: typed REST calls (`createRest`), the login (`Auth`) and realtime
// with resume (`ShoalRealtime`). See README.md.

export { Auth, ApiError, SessionEndedError, type StoredTokens, type TokenStore } from "./auth.js";
export { createRest, type ShoalRest } from "./rest.js";
export {
  RealtimeError,
  ShoalRealtime,
  type ClientEvents,
  type JoinAck,
  type Message,
  type RealtimeOptions,
  type Resync,
  type SendAck,
  type ServerEvents,
} from "./realtime.js";
export type { components, paths } from "./generated/api.js";
