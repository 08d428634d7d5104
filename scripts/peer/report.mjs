// Prints the table of scripts/bench-peer.sh from its results (one JSON line per sample):
// medians per workload and system, and the ratios peer / ours. Checks the samples first.
import fs from "node:fs"

const [file, NEW, HOLD, EDITS] = process.argv.slice(2)
const fmt = n => Number(n).toLocaleString("en-US")
const rows = fs.readFileSync(file, "utf8").split("\n").filter(Boolean).map(l => JSON.parse(l))
const median = xs => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

// Sanity: what each sample must show for it to count.
const problems = []
for (const { workload, r } of rows) {
  if (r.system === "gesync") {
    const want = { w1: Number(NEW), w2: 0, w3a: Number(EDITS), w3b: Number(EDITS) }[workload]
    if (r.pushed !== want || r.rejected !== 0 || r.pending_after !== 0)
      problems.push(`gesync ${workload}: pushed ${r.pushed} (want ${want}), rejected ${r.rejected}, pending ${r.pending_after}`)
    if (workload === "w2" && r.pulled !== 0) problems.push(`gesync w2 pulled ${r.pulled}`)
  } else if (r.verify && (r.verify.missing || r.verify.stale)) {
    problems.push(`automerge-repo ${workload}: server storage check ${JSON.stringify(r.verify)}`)
  }
}

const workloads = [
  ["w1", `${fmt(NEW)} new records, first sync up`],
  ["w2", `holding ${fmt(HOLD)} records, reconnect with nothing new`],
  ["w3a", `${fmt(EDITS)} one-field edits synced up (peer loads only the edited docs)`],
  ["w3b", `${fmt(EDITS)} one-field edits synced up (peer loads all ${fmt(HOLD)} held docs)`],
]
const lines = []
lines.push("| workload | system | wall ms | bytes on the wire | samples |")
lines.push("|---|---|---:|---:|---:|")
const ratios = []
for (const [w, title] of workloads) {
  const of = sys => rows.filter(x => x.workload === w && x.r.system === sys).map(x => x.r)
  const ours = of("gesync")
  const peer = of("automerge-repo")
  if (!ours.length || !peer.length) continue
  const o = { ms: median(ours.map(r => r.wall_ms)), b: median(ours.map(r => r.bytes)), n: ours.length }
  const p = { ms: median(peer.map(r => r.wall_ms)), b: median(peer.map(r => r.bytes)), n: peer.length }
  lines.push(`| ${title} | gesync | ${fmt(Math.round(o.ms))} | ${fmt(Math.round(o.b))} | ${o.n} |`)
  lines.push(`| | automerge-repo | ${fmt(Math.round(p.ms))} | ${fmt(Math.round(p.b))} | ${p.n} |`)
  const rt = p.ms / o.ms
  const rb = p.b / o.b
  lines.push(`| | **ratio peer / ours** | **${rt.toFixed(1)}×** | **${rb >= 100 ? fmt(Math.round(rb)) : rb.toFixed(1)}×** | |`)
  ratios.push({ w, title, rt, rb })
}
console.log(lines.join("\n"))
console.log()
for (const { w, title, rt, rb } of ratios) {
  const verdict = rt > 1 && rb > 1 ? "ours ahead on both" : `ours BEHIND on ${[rt <= 1 && "time", rb <= 1 && "bytes"].filter(Boolean).join(" and ")}`
  console.log(`${w}: ${verdict} (time ${rt.toFixed(2)}×, bytes ${rb.toFixed(1)}×)${w === "w2" ? (rb >= 100 ? " — meets ≥100× fewer bytes" : " — MISSES the ≥100× bytes goal") : ""}`)
}
// Details: medians of the parts of the wall time.
console.log()
console.log("details (medians): open = loading the local store / finding the docs; synced = peer saw the server's heads equal its own")
for (const [w] of workloads) {
  for (const sys of ["gesync", "automerge-repo"]) {
    const rs = rows.filter(x => x.workload === w && x.r.system === sys).map(x => x.r)
    if (!rs.length) continue
    const part = k => (rs.every(r => typeof r[k] === "number") ? Math.round(median(rs.map(r => r[k]))) : "-")
    const extra = sys === "gesync" ? `requests ${part("requests")}` : `synced ${part("synced_ms")} ms, server flush ${part("server_flush_ms")} ms, loaded ${part("loaded")}`
    console.log(`  ${w} ${sys}: open ${part("open_ms")} ms, wall ${part("wall_ms")} ms, up ${fmt(part("up"))} B, down ${fmt(part("down"))} B, ${extra}`)
  }
}
if (problems.length) {
  console.log("\nPROBLEMS:\n  " + problems.join("\n  "))
  process.exit(1)
}
