package vn.gesync.core

import java.io.File
import java.net.ServerSocket
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest as JHttpRequest
import java.net.http.HttpResponse
import java.nio.file.Files
import java.time.Duration

/**
 * A real gesync server for the tests: `gesync-server demo --plain-http` (the demo's org units,
 * accounts and records) on a free loopback port and a fresh data directory, as the web app's
 * tests start it (tests/app/harness.mjs). The binary is the workspace's debug build, named by
 * the `gesync.server` system property (set in pom.xml).
 */
class GesyncServer : AutoCloseable {
    val dir: File = Files.createTempDirectory("gesync-kotlin-server-").toFile()
    val url: String
    private val process: Process
    private val orphan: Thread
    private val http: HttpClient = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build()

    init {
        val bin = System.getProperty("gesync.server") ?: error("the gesync.server system property names the server binary")
        check(File(bin).canExecute()) { "no server binary at $bin: build it with `cargo build -p gesync-server`" }
        val port = ServerSocket(0).use { it.localPort }
        url = "http://127.0.0.1:$port"
        val pb = ProcessBuilder(bin, "demo", "--data-dir", File(dir, "data").path, "--listen", "127.0.0.1:$port", "--plain-http")
        pb.environment()["GESYNC_LOG"] = "warn"
        // The demo prints its accounts' passwords: they go to a file, not to the test's output.
        pb.redirectOutput(File(dir, "server.out"))
        pb.redirectError(File(dir, "server.err"))
        process = pb.start()
        // Should the test JVM end without `close` (a crash, a kill), the server goes with it.
        val orphan = Thread { process.destroyForcibly() }
        Runtime.getRuntime().addShutdownHook(orphan)
        this.orphan = orphan
        val deadline = System.nanoTime() + Duration.ofSeconds(120).toNanos()
        while (true) {
            check(process.isAlive) { "the server exited at start: " + File(dir, "server.err").readText().takeLast(2000) }
            val up = runCatching { get("/healthz", null).first == 200 }.getOrDefault(false)
            if (up) break
            check(System.nanoTime() < deadline) { "the server did not start in 120 s" }
            Thread.sleep(100)
        }
    }

    /** `(status, body)` of a JSON API call. */
    fun call(method: String, path: String, token: String?, json: String?): Pair<Int, String> {
        val b = JHttpRequest.newBuilder(URI.create(url + path)).timeout(Duration.ofSeconds(30))
        if (token != null) b.header("Authorization", "Bearer $token")
        if (json != null) b.header("Content-Type", "application/json")
        b.method(method, if (json != null) JHttpRequest.BodyPublishers.ofString(json) else JHttpRequest.BodyPublishers.noBody())
        val r = http.send(b.build(), HttpResponse.BodyHandlers.ofString())
        return r.statusCode() to r.body()
    }

    fun get(path: String, token: String?) = call("GET", path, token, null)

    /** An access token of `user`, logged in through the API (as the admin's or reviewer's pages). */
    fun token(user: String, password: String): String {
        val (status, body) = call("POST", "/api/v1/auth/login", null, """{"username":"$user","password":"$password"}""")
        check(status == 200) { "login of $user: HTTP $status" }
        return Regex(""""access_token"\s*:\s*"([^"]+)"""").find(body)?.groupValues?.get(1) ?: error("no access token in the login answer")
    }

    override fun close() {
        runCatching { Runtime.getRuntime().removeShutdownHook(orphan) }
        process.destroy()
        if (!process.waitFor(20, java.util.concurrent.TimeUnit.SECONDS)) process.destroyForcibly().waitFor()
        dir.deleteRecursively()
    }
}
