package vn.gesync.core

import java.io.IOException
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpResponse
import java.time.Duration
import java.net.http.HttpRequest as JHttpRequest

/**
 * The app's own HTTP stack (java.net.http here, OkHttp in an Android app), as an app that owns
 * it drives the library: the library says which request to make, this makes it. `online` false
 * is a phone with no network: no answer at all.
 */
class AppHttp {
    @Volatile var online = true
    var requests = 0
        private set
    private val client: HttpClient = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build()

    /** The answer, or null when there was none (the library is told `failed`). */
    fun execute(request: HttpRequest): HttpAnswer? {
        requests++
        if (!online) return null
        val b = JHttpRequest.newBuilder(URI.create(request.url)).timeout(Duration.ofSeconds(60))
        for ((name, value) in request.headers) b.header(name, value)
        b.method(request.method, JHttpRequest.BodyPublishers.ofByteArray(request.body))
        return try {
            val r = client.send(b.build(), HttpResponse.BodyHandlers.ofByteArray())
            val retryAfter = r.headers().firstValue("retry-after").orElse(null)?.trim()?.toULongOrNull()
            HttpAnswer(r.statusCode().toUShort(), r.body(), retryAfter)
        } catch (e: IOException) {
            null
        }
    }

    /** Logs `phone` in with this HTTP stack. */
    fun login(phone: Phone, server: String, user: String, password: String) {
        val request = phone.loginRequest(server, user, password)
        val answer = execute(request) ?: throw IOException("no answer to the login")
        phone.loginAnswer(server, user, answer)
    }

    /**
     * One sync as a WorkManager worker drives it: requests until done; a wait longer than
     * `maxWaitMillis` ends the run (the worker would return `Result.retry()`), returned as null.
     */
    fun sync(phone: Phone, maxWaitMillis: Long = 5_000, onProgress: (SyncProgress) -> Unit = {}): SyncReport? {
        phone.beginSync()
        return drive(phone, maxWaitMillis, onProgress)
    }

    /** Goes on with the sync begun on `phone` (see [sync]). */
    fun drive(phone: Phone, maxWaitMillis: Long = 5_000, onProgress: (SyncProgress) -> Unit = {}): SyncReport? {
        while (true) {
            when (val step = phone.nextStep()) {
                is SyncStep.Send -> {
                    val answer = execute(step.request)
                    if (answer == null) phone.failed("no answer") else onProgress(phone.answer(answer))
                }
                is SyncStep.Wait -> {
                    if (step.millis.toLong() > maxWaitMillis) {
                        println("sync left for later: wait ${step.millis} ms after ${step.failures} failures (${step.code}: ${step.reason})")
                        return null
                    }
                    Thread.sleep(step.millis.toLong())
                }
                is SyncStep.Done -> return step.report
            }
        }
    }
}

/**
 * The app's key store: in an Android app, a key kept wrapped by an Android Keystore key; here a
 * map in memory, counting what the library asked of it.
 */
class MemoryKeystore : KeyProvider {
    val keys = java.util.concurrent.ConcurrentHashMap<String, ByteArray>()
    val forgotten = java.util.concurrent.CopyOnWriteArrayList<String>()

    override fun createKey(storeDir: String): ByteArray {
        val key = ByteArray(32).also { java.security.SecureRandom().nextBytes(it) }
        keys[storeDir] = key
        return key
    }

    override fun openKey(storeDir: String): ByteArray =
        keys[storeDir]?.clone() ?: throw GesyncException.Key("no key kept for this store")

    override fun forgetKey(storeDir: String) {
        keys.remove(storeDir)
        forgotten.add(storeDir)
    }
}
