// The peer's client: an automerge-repo Repo with its own NodeFSStorageAdapter (the documents
// live on disk, like a phone's) and the WebSocket client adapter.
//
//   node client.mjs create --dir D --index F --records R.json --from A --to B
//       offline (no network adapter): one document per record R[A..B], as Automerge.from of
//       the same JSON structure our SDK builds (strings as ImmutableString, i.e. scalar
//       strings like ours); the document URLs are appended to F.
//   node client.mjs edit --dir D --index F --count N --value V
//       offline: status = V in the first N documents of F.
//   node client.mjs sync --dir D --index F --url ws://… --control HOST:PORT
//                        --server-control http://… [--skip S] [--only N] [--flush] [--verify]
//       the timed part; prints one JSON line. The clock starts before the Repo is made (an app
//       starting up with its documents on disk). Every document of F (or the first N) is
//       found (after skipping S; loaded from the client's storage, which also starts its sync with the server).
//       `synced_ms`: every one of them has a sync state in which the server's heads equal the
//       client's heads (the Repo's own sync info for the server's storage id, which it updates
//       from the server's sync messages). With --flush the clock runs on until the server's
//       repo.flush() (over the control port, outside the proxy) has returned, i.e. every
//       document is written to the server's files: `wall_ms`. Bytes: the proxy's counts, both
//       directions (WebSocket upgrade and frames included), reset just before the clock starts.
import fs from "node:fs"
import net from "node:net"
import * as A from "@automerge/automerge"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

const [, , cmd, ...rest] = process.argv
function opt(name) {
  const i = rest.indexOf(name)
  return i >= 0 && i + 1 < rest.length ? rest[i + 1] : undefined
}
function req(name) {
  const v = opt(name)
  if (v === undefined) throw new Error(`missing ${name}`)
  return v
}
const flag = name => rest.includes(name)

function toAutomerge(v) {
  if (typeof v === "string") return new A.ImmutableString(v)
  if (Array.isArray(v)) return v.map(toAutomerge)
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toAutomerge(x)]))
  return v
}

function readIndex(path) {
  return fs.existsSync(path) ? fs.readFileSync(path, "utf8").split("\n").filter(Boolean) : []
}

function control(addr, line) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))]
  return new Promise((resolve, reject) => {
    const s = net.connect(port, host, () => s.write(line + "\n"))
    let buf = ""
    s.on("data", d => {
      buf += d
      const nl = buf.indexOf("\n")
      if (nl >= 0) {
        s.end()
        resolve(JSON.parse(buf.slice(0, nl)))
      }
    })
    s.on("error", reject)
  })
}

async function post(url, body) {
  const r = await fetch(url, { method: "POST", body: body === undefined ? undefined : JSON.stringify(body) })
  if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()}`)
  return r.json()
}

const sameHeads = (a, b) => !!a && !!b && a.length === b.length && a.every(h => b.includes(h))

async function create() {
  const records = JSON.parse(fs.readFileSync(req("--records"), "utf8"))
  const [from, to] = [Number(req("--from")), Number(req("--to"))]
  const repo = new Repo({ storage: new NodeFSStorageAdapter(req("--dir")) })
  const urls = []
  for (let i = from; i < to; i++) urls.push(repo.create(toAutomerge(records[i])).url)
  await repo.flush()
  await repo.shutdown()
  fs.appendFileSync(req("--index"), urls.map(u => u + "\n").join(""))
  console.log(JSON.stringify({ created: urls.length }))
}

async function edit() {
  const urls = readIndex(req("--index")).slice(0, Number(req("--count")))
  const value = req("--value")
  const repo = new Repo({ storage: new NodeFSStorageAdapter(req("--dir")) })
  for (const url of urls) {
    const h = await repo.find(url)
    h.change(d => {
      d.status = new A.ImmutableString(value)
    })
  }
  await repo.flush()
  await repo.shutdown()
  console.log(JSON.stringify({ edited: urls.length }))
}

async function sync() {
  let urls = readIndex(req("--index"))
  if (opt("--skip")) urls = urls.slice(Number(opt("--skip")))
  if (opt("--only")) urls = urls.slice(0, Number(opt("--only")))
  const ctl = req("--control")
  const serverControl = req("--server-control")
  await control(ctl, "reset")

  const t0 = performance.now()
  const repo = new Repo({
    storage: new NodeFSStorageAdapter(req("--dir")),
    network: [new WebSocketClientAdapter(req("--url"))],
  })
  const handles = await Promise.all(urls.map(u => repo.find(u)))
  const openMs = performance.now() - t0

  // The server's storage id, from its peer metadata once the WebSocket handshake is done.
  let sid
  const tOpen = performance.now()
  while (!sid) {
    const peer = repo.peers[0]
    sid = peer && repo.getStorageIdOfPeer(peer)
    if (!sid) await new Promise(r => setTimeout(r, 2))
    if (performance.now() - tOpen > 600_000) throw new Error("no server peer 600 s after loading the documents")
  }
  let left = 0
  await new Promise((resolve, reject) => {
    const pending = new Set()
    const check = h => {
      if (pending.has(h) && sameHeads(h.getSyncInfo(sid)?.lastHeads, h.heads())) {
        pending.delete(h)
        h.off("remote-heads", h.__bench)
        if (pending.size === 0) resolve()
      }
    }
    for (const h of handles) {
      pending.add(h)
      h.__bench = () => check(h)
      h.on("remote-heads", h.__bench)
    }
    for (const h of handles) check(h)
    if (pending.size === 0) resolve()
    const timer = setInterval(() => {
      if (pending.size === 0) return clearInterval(timer)
      if (performance.now() - tOpen > 1_800_000) {
        clearInterval(timer)
        left = pending.size
        reject(new Error(`${left} documents not synced 1,800 s after loading`))
      }
    }, 1000)
    timer.unref()
  })
  const syncedMs = performance.now() - t0
  let flush = null
  if (flag("--flush")) flush = await post(`${serverControl}/flush`)
  const wallMs = performance.now() - t0
  const bytes = await control(ctl, "read")

  let verify = null
  if (flag("--verify")) {
    const docs = Object.fromEntries(handles.map(h => [h.documentId, h.heads()]))
    verify = await post(`${serverControl}/verify`, { docs })
  }
  await repo.shutdown()
  console.log(
    JSON.stringify({
      system: "automerge-repo",
      held: readIndex(req("--index")).length,
      loaded: handles.length,
      open_ms: openMs,
      synced_ms: syncedMs,
      wall_ms: wallMs,
      server_flush_ms: flush?.flush_ms ?? null,
      up: bytes.up,
      down: bytes.down,
      bytes: bytes.up + bytes.down,
      connections: bytes.connections,
      verify,
    }),
  )
}

const commands = { create, edit, sync }
if (!commands[cmd]) {
  console.error("usage: node client.mjs create|edit|sync …")
  process.exit(2)
}
commands[cmd]()
  .then(() => process.exit(0))
  .catch(e => {
    console.error("error:", e?.stack ?? e)
    process.exit(1)
  })
