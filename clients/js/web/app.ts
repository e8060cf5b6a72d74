// The workspace page Shoal serves at `/`: sign up / log in, workspaces, a task board,
// chat with presence and typing, notifications — all through the client library
// (../src), built into one file by esbuild (`npm run build:web`) and compiled into
// the binary (src/http/web.rs).

import { Auth, ShoalRealtime, createRest, type Message, type StoredTokens, type components } from "../src/index.js";

type Task = components["schemas"]["Task"];
type Member = components["schemas"]["Member"];
type Status = components["schemas"]["Status"];

const STATUSES: [Status, string][] = [
  ["todo", "To do"],
  ["in_progress", "In progress"],
  ["done", "Done"],
];

const store = {
  load: (): StoredTokens | null => JSON.parse(localStorage.getItem("shoal.tokens") ?? "null"),
  save: (t: StoredTokens | null) =>
    t ? localStorage.setItem("shoal.tokens", JSON.stringify(t)) : localStorage.removeItem("shoal.tokens"),
};
const auth = new Auth(location.origin, store);
const api = createRest(auth);
let rt: ShoalRealtime | null = null;

const app = document.getElementById("app")!;
const statusBadge = document.getElementById("status")!;
const who = document.getElementById("who")!;
const logoutButton = document.getElementById("logout") as HTMLButtonElement;

/** Builds an element: `h("div", {class: "x"}, child, "text")`. */
function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | ((e: Event) => void)> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (typeof v === "function") el.addEventListener(k, v);
    else el.setAttribute(k, v);
  }
  el.append(...children);
  return el;
}

function errorText(error: unknown): string {
  const e = error as { error?: { message?: string } } | undefined;
  return e?.error?.message ?? String(error);
}

// ---------------------------------------------------------------- logging in

function showLogin(message = ""): void {
  rt?.close();
  rt = null;
  who.textContent = "";
  logoutButton.hidden = true;
  setOnline(false);
  const error = h("p", { class: "error", "data-testid": "login-error" }, message);
  const email = h("input", { name: "email", type: "email", placeholder: "e-mail", required: "" });
  const password = h("input", { name: "password", type: "password", placeholder: "password (8+)", required: "" });
  const name = h("input", { name: "display_name", placeholder: "display name (to sign up)" });
  const login = async (e: Event) => {
    e.preventDefault();
    try {
      await auth.login(email.value, password.value);
      void start();
    } catch (err) {
      error.textContent = (err as Error).message;
    }
  };
  const signup = async () => {
    const { error: refused } = await api.POST("/api/auth/register", {
      body: { email: email.value, password: password.value, display_name: name.value || email.value },
    });
    if (refused) {
      error.textContent = errorText(refused);
      return;
    }
    await login(new Event("submit"));
  };
  app.replaceChildren(
    h("div", { class: "panel" },
      h("h2", {}, "Log in or sign up"),
      h("form", { submit: login }, email, password, name,
        h("button", { type: "submit", "data-testid": "login" }, "Log in"),
        h("button", { type: "button", "data-testid": "signup", click: () => void signup() }, "Sign up")),
      error),
  );
}

logoutButton.addEventListener("click", async () => {
  await auth.logout();
  showLogin();
});

// ---------------------------------------------------------------- the workspace view

interface View {
  wid: string | null;
  tasks: Map<string, Task>;
  members: Map<string, Member>;
  online: Set<string>;
  typing: Map<string, ReturnType<typeof setTimeout>>;
}
const view: View = { wid: null, tasks: new Map(), members: new Map(), online: new Set(), typing: new Map() };

const workspaceList = h("div", { class: "workspaces" });
const board = h("div", { class: "board" });
const messages = h("div", { class: "messages", "data-testid": "messages" });
const typingLine = h("div", { class: "typing", "data-testid": "typing" });
const onlineList = h("ul", { "data-testid": "online" });
const notifications = h("ul", { "data-testid": "notifications" });
const title = h("h2", {}, "");

function setOnline(online: boolean): void {
  statusBadge.textContent = online ? "online" : "offline";
  statusBadge.classList.toggle("online", online);
}

async function start(): Promise<void> {
  const { data: me } = await api.GET("/api/me");
  if (!me) return showLogin();
  who.textContent = me.display_name;
  logoutButton.hidden = false;
  rt = new ShoalRealtime(auth, { socket: { transports: ["websocket"] } });
  let connects = 0;
  rt.on("connected", () => {
    statusBadge.dataset.connects = String(++connects);
    setOnline(true);
    // Task events are not replayed after a drop: the board is read again.
    if (connects > 1 && view.wid) void loadTasks(view.wid);
  });
  rt.on("disconnected", () => setOnline(false));
  rt.on("sessionEnded", () => showLogin("Your session ended; log in again."));
  rt.on("message", (m) => m.workspace_id === view.wid && appendMessage(m));
  rt.on("reload", ({ workspaceId }) => workspaceId === view.wid && void loadMessages(workspaceId));
  const taskChanged = (t: Task) => {
    if (t.workspace_id !== view.wid) return;
    view.tasks.set(t.id, t);
    renderBoard();
  };
  rt.on("task:created", taskChanged);
  rt.on("task:updated", taskChanged);
  rt.on("task:deleted", (t) => {
    if (t.workspace_id !== view.wid) return;
    view.tasks.delete(t.id);
    renderBoard();
  });
  rt.on("presence:update", (p) => {
    if (p.workspace_id !== view.wid) return;
    if (p.online) view.online.add(p.user_id);
    else view.online.delete(p.user_id);
    renderOnline();
  });
  rt.on("typing", (t) => {
    if (t.workspace_id !== view.wid) return;
    clearTimeout(view.typing.get(t.user_id));
    view.typing.set(t.user_id, setTimeout(() => (view.typing.delete(t.user_id), renderTyping()), 3000));
    renderTyping();
  });
  rt.on("notification", (n) => notifications.prepend(h("li", {}, `${n.title} (${n.kind})`)));
  rt.on("member:added", (m) => m.workspace_id === view.wid && void loadMembers(m.workspace_id));
  rt.on("member:added", () => void loadWorkspaces());

  const wsName = h("input", { placeholder: "new workspace", required: "", "data-testid": "workspace-name" });
  const memberEmail = h("input", { placeholder: "add member by e-mail", type: "email", required: "", "data-testid": "member-email" });
  const taskTitle = h("input", { placeholder: "new task", required: "", "data-testid": "task-title" });
  const chatInput = h("input", { placeholder: "message", required: "", "data-testid": "chat-input", input: throttledTyping() });
  app.replaceChildren(
    h("div", { class: "layout" },
      h("div", { class: "panel" },
        h("h2", {}, "Workspaces"),
        workspaceList,
        h("form", { submit: (e) => void createWorkspace(e, wsName) }, wsName, h("button", { "data-testid": "create-workspace" }, "Create")),
        h("h2", {}, "Notifications"),
        notifications),
      h("div", { class: "panel" },
        title,
        h("form", { submit: (e) => void addMember(e, memberEmail) }, memberEmail, h("button", { "data-testid": "add-member" }, "Add")),
        h("form", { submit: (e) => void createTask(e, taskTitle) }, taskTitle, h("button", { "data-testid": "add-task" }, "Add task")),
        board),
      h("div", { class: "panel" },
        h("h2", {}, "Chat"),
        messages,
        typingLine,
        h("form", { submit: (e) => void sendMessage(e, chatInput) }, chatInput, h("button", { "data-testid": "send" }, "Send")),
        h("h2", {}, "Online"),
        onlineList)),
  );
  await loadWorkspaces();
}

async function loadWorkspaces(): Promise<void> {
  const { data } = await api.GET("/api/workspaces");
  workspaceList.replaceChildren(
    ...(data?.items ?? []).map((w) =>
      h("button", { class: `ws${w.id === view.wid ? " selected" : ""}`, "data-id": w.id, click: () => void open(w.id, w.name) }, w.name),
    ),
  );
  if (!view.wid && data?.items[0]) await open(data.items[0].id, data.items[0].name);
}

async function createWorkspace(e: Event, input: HTMLInputElement): Promise<void> {
  e.preventDefault();
  const { data } = await api.POST("/api/workspaces", { body: { name: input.value } });
  input.value = "";
  if (data) {
    await open(data.id, data.name);
    await loadWorkspaces();
  }
}

async function open(wid: string, name: string): Promise<void> {
  if (view.wid && view.wid !== wid) await rt?.leave(view.wid);
  view.wid = wid;
  title.textContent = name;
  for (const b of workspaceList.querySelectorAll("button")) b.classList.toggle("selected", b.dataset.id === wid);
  view.online.clear();
  // One round trip's wait for all three: the messages are shown once the members
  // (their authors' names) are in.
  const [, , last] = await Promise.all([loadTasks(wid), loadMembers(wid), loadMessages(wid)]);
  await rt?.join(wid, last);
  for (const user of (await rt?.presence(wid)) ?? []) view.online.add(user);
  renderOnline();
}

let membersLoaded: Promise<void> = Promise.resolve();

function loadMembers(wid: string): Promise<void> {
  membersLoaded = (async () => {
    const { data } = await api.GET("/api/workspaces/{wid}/members", { params: { path: { wid } } });
    view.members = new Map((data?.items ?? []).map((m) => [m.user_id, m]));
    renderOnline();
  })();
  return membersLoaded;
}

async function addMember(e: Event, input: HTMLInputElement): Promise<void> {
  e.preventDefault();
  if (!view.wid) return;
  await api.POST("/api/workspaces/{wid}/members", { params: { path: { wid: view.wid } }, body: { email: input.value } });
  input.value = "";
  await loadMembers(view.wid);
}

/** Reads the latest messages and shows them (with their authors' names once the
 * members are loaded); the last `seq` shown. */
async function loadMessages(wid: string): Promise<number> {
  const [{ data }] = await Promise.all([
    api.GET("/api/workspaces/{wid}/messages", { params: { path: { wid }, query: { limit: 100 } } }),
    membersLoaded,
  ]);
  const items = [...(data?.items ?? [])].sort((a, b) => a.seq - b.seq);
  messages.replaceChildren();
  items.forEach(appendMessage);
  return items.at(-1)?.seq ?? 0;
}

function appendMessage(m: Message): void {
  const author = view.members.get(m.user_id)?.display_name ?? m.user_id.slice(0, 8);
  messages.append(h("div", { class: "message", "data-seq": String(m.seq) }, h("span", { class: "author" }, author), m.body));
  messages.scrollTop = messages.scrollHeight;
}

async function sendMessage(e: Event, input: HTMLInputElement): Promise<void> {
  e.preventDefault();
  if (!view.wid || !rt || !input.value) return;
  const body = input.value;
  input.value = "";
  await rt.send(view.wid, body);
}

function throttledTyping(): () => void {
  let last = 0;
  return () => {
    if (view.wid && Date.now() - last > 2000) {
      last = Date.now();
      rt?.typing(view.wid);
    }
  };
}

async function loadTasks(wid: string): Promise<void> {
  const tasks = new Map<string, Task>();
  const pages = await Promise.all(
    STATUSES.map(([status]) =>
      api.GET("/api/workspaces/{wid}/tasks", { params: { path: { wid }, query: { status, limit: 100 } } }),
    ),
  );
  for (const { data } of pages) for (const t of data?.items ?? []) tasks.set(t.id, t);
  if (view.wid === wid) {
    view.tasks = tasks;
    renderBoard();
  }
}

async function createTask(e: Event, input: HTMLInputElement): Promise<void> {
  e.preventDefault();
  if (!view.wid) return;
  await api.POST("/api/workspaces/{wid}/tasks", { params: { path: { wid: view.wid } }, body: { title: input.value } });
  input.value = "";
}

async function move(task: Task, status: Status): Promise<void> {
  const { data } = await api.PATCH("/api/workspaces/{wid}/tasks/{id}", {
    params: { path: { wid: task.workspace_id, id: task.id } },
    body: { status, version: task.version },
  });
  if (data) {
    view.tasks.set(data.id, data);
    renderBoard();
  } else {
    await loadTasks(task.workspace_id); // changed meanwhile by someone else
  }
}

function renderBoard(): void {
  board.replaceChildren(
    ...STATUSES.map(([status, label], i) =>
      h("div", { class: "column", "data-status": status },
        h("h3", {}, label),
        ...[...view.tasks.values()]
          .filter((t) => t.status === status)
          .map((t) =>
            h("div", { class: "task", "data-title": t.title },
              ...(i > 0 ? [h("button", { class: "small", title: "move left", click: () => void move(t, STATUSES[i - 1]![0]) }, "←")] : []),
              h("span", {}, t.title),
              ...(i < STATUSES.length - 1 ? [h("button", { class: "small", title: "move right", "data-testid": "move-right", click: () => void move(t, STATUSES[i + 1]![0]) }, "→")] : []),
            ),
          ),
      ),
    ),
  );
}

function renderOnline(): void {
  onlineList.replaceChildren(
    ...[...view.online].map((id) => h("li", { class: "present" }, view.members.get(id)?.display_name ?? id.slice(0, 8))),
  );
}

function renderTyping(): void {
  const names = [...view.typing.keys()].map((id) => view.members.get(id)?.display_name ?? "someone");
  typingLine.textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}

if (auth.loggedIn) void start().catch(() => showLogin());
else showLogin();
