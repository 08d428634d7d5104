// The peer: an automerge-repo sync server set up exactly like the reference
// automerge-repo-sync-server (a `ws` WebSocketServer in noServer mode on an HTTP server,
// NodeWSServerAdapter, NodeFSStorageAdapter, sharePolicy () => false), minus its express
// landing page.
//
//   node server.mjs --port P --dir DIR --control-port C [--keepalive-ms MS]
//
// --keepalive-ms is for diagnosis only (the NodeWSServerAdapter's keepAliveInterval; without
// it, the library's default, 5000 ms, as in the reference server).
//
// The control port (never behind the byte-counting proxy) is for the benchmark only:
//   POST /flush   awaits repo.flush() of every ready handle (each document written to its
//                 files) and answers {"flush_ms", "handles"}
//   POST /verify  body {"docs": {documentId: [heads]}}: loads each document from the storage
//                 files with a fresh NodeFSStorageAdapter and Repo, answers
//                 {"checked", "missing", "stale"}
//   POST /stats   counts since start, for reading what the peer did: {"connections" (WebSocket
//                 connections accepted), "closed", "terminated" (by the adapter's keep-alive:
//                 a client that did not answer its ping within keepAliveInterval, 5 s)}
// It prints {"ready": true} once listening.
import http from "node:http"
import os from "node:os"
import { WebSocketServer } from "ws"
import { Repo } from "@automerge/automerge-repo"
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

function arg(name) {
  const i = process.argv.indexOf(name)
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`missing ${name}`)
  return process.argv[i + 1]
}
const port = Number(arg("--port"))
const dir = arg("--dir")
const controlPort = Number(arg("--control-port"))
const keepAlive = process.argv.includes("--keepalive-ms") ? Number(arg("--keepalive-ms")) : undefined

// ---- the reference sync server ----
const wss = new WebSocketServer({ noServer: true })
const server = http.createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/plain" })
  res.end("👍 @automerge/automerge-repo-sync-server is running")
})
const repo = new Repo({
  network: [new NodeWSServerAdapter(wss, keepAlive)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: `storage-server-${os.hostname()}`,
  // Since this is a server, we don't share generously — meaning we only sync documents they
  // already know about and can ask for by ID.
  sharePolicy: async () => false,
})
// Counting only (for /stats), not part of the reference server: wraps each socket's terminate().
const stats = { connections: 0, closed: 0, terminated: 0 }
wss.on("connection", socket => {
  stats.connections++
  socket.on("close", () => stats.closed++)
  const terminate = socket.terminate.bind(socket)
  socket.terminate = () => {
    stats.terminated++
    return terminate()
  }
})
server.on("upgrade", (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, socket => {
    wss.emit("connection", socket, request)
  })
})

// ---- the benchmark's control port ----
function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = []
    req.on("data", c => chunks.push(c))
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    req.on("error", reject)
  })
}

const control = http.createServer(async (req, res) => {
  try {
    let answer
    if (req.url === "/flush") {
      const t0 = performance.now()
      // repo.flush() with no argument throws on a handle that is not ready (one still being
      // looked up); only ready handles have anything to write.
      const ready = Object.values(repo.handles).filter(h => h.isReady()).map(h => h.documentId)
      await repo.flush(ready)
      answer = { flush_ms: performance.now() - t0, handles: Object.keys(repo.handles).length }
    } else if (req.url === "/verify") {
      const { docs } = JSON.parse(await readBody(req))
      const fresh = new Repo({ storage: new NodeFSStorageAdapter(dir), sharePolicy: async () => false })
      let checked = 0
      let missing = 0
      let stale = 0
      const missingIds = []
      for (const [id, heads] of Object.entries(docs)) {
        checked++
        let handle
        try {
          handle = await fresh.find(id)
        } catch (e) {
          if (missing++ < 3) missingIds.push(`${id}: ${e?.message ?? e}`)
          continue
        }
        const have = new Set(handle.heads())
        if (!heads.every(h => have.has(h))) stale++
      }
      // No fresh.shutdown(): it flushes, and throws on the handles of documents not found.
      answer = { checked, missing, stale }
      if (missing) answer.missing_ids = missingIds
    } else if (req.url === "/stats") {
      answer = stats
    } else {
      res.writeHead(404)
      res.end()
      return
    }
    res.writeHead(200, { "content-type": "application/json" })
    res.end(JSON.stringify(answer))
  } catch (e) {
    res.writeHead(500)
    res.end(String(e?.stack ?? e))
  }
})

server.listen(port, "127.0.0.1", () => {
  control.listen(controlPort, "127.0.0.1", () => {
    console.log(JSON.stringify({ ready: true }))
  })
})
