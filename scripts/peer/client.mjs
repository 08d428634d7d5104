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
//                        --server-control http://… [--skip S] [--only N] [--flush] [--verify] [--cap-s S]
//       the timed part; prints one JSON line. The clock starts before the Repo is made (an app
//       starting up with its documents on disk). Every document of F (or the first N) is
//       found (after skipping S; loaded from the client's storage, which also starts its sync with the server).
//       `synced_ms`: every one of them has a sync state in which the server's heads equal the
//       client's heads (the Repo's own sync info for the server's storage id, which it updates
//       from the server's sync messages). With --flush the clock runs on until the server's
//       repo.flush() (over the control port, outside the proxy) has returned, i.e. every
//       document is written to the server's files: `wall_ms`. Bytes: the proxy's counts, both
//       directions (WebSocket upgrade and frames included), reset just before the clock starts.
//       Fails if the documents are not synced --cap-s (1800) seconds after loading.
//   node client.mjs join --dir D --index F --url ws://… --control HOST:PORT --server-control http://…
//                        --push-records R.json [--cap-s S] [--retry-ms MS] [--down B/S --up B/S --link TEXT]
//       bench-2g's newcomer (scripts/bench-peer-2g.sh): one Repo, empty storage D, knowing the
//       URLs of F, behind the slow link. Pull: every URL is found (re-found every --retry-ms
//       while it comes back unavailable) until every document is ready with the server's heads
//       equal to its own, then written to D. Push: the documents of R are created in the same
//       running Repo until the server's heads equal them, then the server's repo.flush(). Each
//       phase has its own cap (--cap-s, from its own start). Prints one JSON line; see the
//       header of scripts/bench-peer-2g.sh for exactly what is timed.
import fs from "node:fs"
import net from "node:net"
import * as A from "@automerge/automerge"
import { Repo, parseAutomergeUrl } from "@automerge/automerge-repo"
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
  const capMs = Number(opt("--cap-s") ?? 1800) * 1000
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
    if (performance.now() - tOpen > Math.min(capMs, 600_000)) throw new Error("no server peer 600 s after loading the documents")
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
      if (performance.now() - tOpen > capMs) {
        clearInterval(timer)
        left = pending.size
        reject(new Error(`${left} documents not synced ${capMs / 1000} s after loading`))
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

const sleep = ms => new Promise(r => setTimeout(r, ms))

async function join() {
  const urls = readIndex(req("--index"))
  const pushRecords = JSON.parse(fs.readFileSync(req("--push-records"), "utf8"))
  const capMs = Number(opt("--cap-s") ?? 1800) * 1000
  const retryMs = Number(opt("--retry-ms") ?? 5000)
  const [down, up] = [Number(opt("--down") ?? 0), Number(opt("--up") ?? 0)]
  const ctl = req("--control")
  const serverControl = req("--server-control")

  // An app does not die of an exception thrown in a network event handler or of a rejection
  // nobody awaits (a browser logs them and goes on); Node would exit. Count them, log a few.
  let errors = 0
  const onError = kind => e => {
    if (errors++ < 5) console.error(`${kind} (the app goes on):`, e?.stack ?? e)
  }
  process.on("uncaughtException", onError("uncaught exception"))
  process.on("unhandledRejection", onError("unhandled rejection"))

  await control(ctl, "reset")
  const t0 = performance.now()
  const repo = new Repo({
    storage: new NodeFSStorageAdapter(req("--dir")),
    network: [new WebSocketClientAdapter(req("--url"))],
  })
  let sessions = 0
  let drops = 0
  repo.networkSubsystem.on("peer", () => sessions++)
  repo.networkSubsystem.on("peer-disconnected", () => drops++)
  const serverStorageId = () => Object.values(repo.peerMetadataByPeerId).find(m => m?.storageId)?.storageId
  // Holding a document: it is ready and the server's heads (the Repo's own sync info for the
  // server's storage id) equal its own.
  const synced = h => {
    const sid = serverStorageId()
    return !!h && !!sid && h.isReady() && sameHeads(h.getSyncInfo(sid)?.lastHeads, h.heads())
  }
  // Polls every 100 ms until every handle of `handles` is synced or `deadline`; true if all are.
  const waitSynced = async (handles, deadline) => {
    let pending = handles.filter(h => !synced(h))
    while (pending.length) {
      if (performance.now() > deadline) return false
      await sleep(100)
      pending = pending.filter(h => !synced(h))
    }
    return true
  }

  // Progress on stderr every 30 s: seconds, documents held, link counts, sessions.
  let phase = "pull"
  const progress = setInterval(async () => {
    const l = await control(ctl, "read").catch(() => ({}))
    const held = Object.values(repo.handles).filter(synced).length
    console.error(
      `progress ${((performance.now() - t0) / 1000).toFixed(0)} s ${phase}: ${held} documents held with the server's heads, ` +
        `link ${JSON.stringify(l)}, sessions ${sessions}, drops ${drops}, unavailable finds ${findUnavailable}, errors ${errors}`,
    )
  }, 30_000)
  progress.unref()

  // ---- pull: the app opens every document it knows of, and re-opens those that come back
  // unavailable (a repeated find of a handle left unavailable answers from the Repo's cache: it
  // sends nothing; the Repo itself asks again when the connection comes back, and takes the
  // server's answer whenever it arrives).
  let findUnavailable = 0
  let findFailed = 0
  const everUnavailable = new Set()
  let stopFinds = false
  const open = async url => {
    for (;;) {
      try {
        return await repo.find(url)
      } catch (e) {
        if (String(e?.message).includes("unavailable")) {
          findUnavailable++
          everUnavailable.add(url)
        } else {
          if (findFailed++ < 3) console.error("find failed:", e?.stack ?? e)
        }
        if (stopFinds) return null
        await sleep(retryMs)
        if (stopFinds) return null
      }
    }
  }
  const finds = urls.map(open)
  const pullHandles = urls.map(u => repo.handles[parseAutomergeUrl(u).documentId])
  const pullCompleted = await waitSynced(pullHandles, t0 + capMs)
  const readyIds = () => Object.values(repo.handles).filter(h => h.isReady()).map(h => h.documentId)
  await repo.flush(readyIds()) // the phone holds them on its disk
  const pullMs = performance.now() - t0
  const pullLink = await control(ctl, "read")
  const pullHeld = pullHandles.filter(synced).length
  const pullReady = pullHandles.filter(h => h.isReady()).length
  const pullUnavailable = findUnavailable

  // ---- push: the officer records new cases in the running app; the Repo syncs them.
  phase = "push"
  const connectedAtPush = repo.peers.length > 0
  const tPush = performance.now()
  const mine = pushRecords.map(r => repo.create(toAutomerge(r)))
  fs.appendFileSync(req("--index"), mine.map(h => h.url + "\n").join(""))
  const pushCompleted = await waitSynced(mine, tPush + capMs)
  let flush = null
  // The server's control port fails only if the server process is gone (server_alive:false).
  const ask = (path, body) => post(`${serverControl}${path}`, body).catch(e => (console.error(`${path}: ${e?.message ?? e}`), null))
  if (pushCompleted) flush = await ask("/flush")
  const pushMs = performance.now() - tPush
  const link = await control(ctl, "read")
  const pushed = mine.filter(synced).length
  const allHandles = [...pullHandles, ...mine]
  const heldEnd = pullHandles.filter(synced).length

  stopFinds = true
  clearInterval(progress)
  const verify = await ask("/verify", {
    docs: Object.fromEntries(allHandles.filter(h => h?.isReady()).map(h => [h.documentId, h.heads()])),
  })
  const server = await ask("/stats")
  const [sessionsEnd, dropsEnd] = [sessions, drops]
  repo.networkSubsystem.disconnect()
  await repo.flush(readyIds()).catch(() => {})
  void finds

  const linkS = down && up ? link.up / up + link.down / down : null
  const r2 = x => (x === null ? null : Math.round(x * 100) / 100)
  const completed = pullCompleted && pushCompleted
  console.log(
    JSON.stringify({
      system: "automerge-repo",
      link: opt("--link") ?? null,
      records: urls.length,
      pull_records: pullHeld,
      pull_attempts: pullLink.connections,
      pull_s: r2(pullMs / 1000),
      push_records: pushed,
      push_attempts: link.connections - pullLink.connections + (connectedAtPush ? 1 : 0),
      push_s: r2(pushMs / 1000),
      bytes_down: link.down,
      bytes_up: link.up,
      connections: link.connections,
      cuts: link.cuts,
      link_s: r2(linkS),
      wall_over_link: linkS ? r2((pullMs + pushMs) / 1000 / linkS) : null,
      completed,
      pull_completed: pullCompleted,
      push_completed: pushCompleted,
      held_after_cap: completed ? null : heldEnd,
      pull_ready: pullReady,
      pull_bytes_down: pullLink.down,
      pull_bytes_up: pullLink.up,
      pull_cuts: pullLink.cuts,
      find_unavailable: findUnavailable,
      find_unavailable_in_pull: pullUnavailable,
      docs_unavailable_once: everUnavailable.size,
      find_failed: findFailed,
      peer_sessions: sessionsEnd,
      peer_drops: dropsEnd,
      errors,
      server_flush_ms: flush ? r2(flush.flush_ms) : null,
      server_alive: server !== null,
      server,
      verify,
    }),
  )
}

const commands = { create, edit, sync, join }
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
