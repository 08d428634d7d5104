package vn.gesync.core

import java.io.File
import java.nio.file.Files
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows

/**
 * The calls an Android app makes, through the generated Kotlin bindings and the host library,
 * against a real gesync server (the demo's accounts): log in, record a case offline, sync, see
 * a conflict made by a second phone, be wiped when an administrator revokes the device.
 * Nothing here prints a record's contents, a token or a password.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class PhoneTest {
    private val officer = "xa.damthuy"
    private val officerPassword = "demo-xa-2025"
    private val commune = "04711"
    private lateinit var server: GesyncServer
    private lateinit var stores: File

    @BeforeAll
    fun start() {
        server = GesyncServer()
        stores = Files.createTempDirectory("gesync-kotlin-phones-").toFile()
    }

    @AfterAll
    fun stop() {
        server.close()
        stores.deleteRecursively()
    }

    private fun storeDir(name: String) = File(stores, name).path

    private fun case(birthYear: Int) =
        """{"commune":"$commune","detected_on":"2025-10-02","victim":{"sex":"female","birth_year":$birthYear}}"""

    private fun reviewerToken() = server.token("ransoat.caobang", "demo-ransoat-2025")

    @Test
    fun `records a case offline and syncs it through the app's own HTTP stack`() {
        val keys = MemoryKeystore()
        val http = AppHttp()
        Phone.open(storeDir("offline"), keys).use { phone ->
            http.login(phone, server.url, officer, officerPassword)
            assertTrue(phone.loggedIn())
            assertEquals(officer, phone.username())
            assertEquals(1, keys.keys.size, "the store's key came from the app's key provider")

            // No network from here: the officer records a case.
            http.online = false
            val id = phone.create(RecordKind.GBV_CASE, case(1988))
            phone.append(id, "services", """{"kind":"health","provided_on":"2025-10-03","provider":"TYT xã"}""")
            phone.set(id, "perpetrator.detected", "true")
            val offline = phone.show(id)
            assertEquals(SyncStatus.Pending, offline.sync)
            assertEquals(RecordKind.GBV_CASE, offline.kind)
            assertTrue(offline.json.contains("\"provider\":\"TYT xã\""))
            assertEquals(1uL, phone.pendingCount())

            // A sync with no network: the request gets no answer, the library says to wait
            // (backoff from half a second, jittered), and the record stays pending.
            phone.beginSync()
            assertTrue(phone.nextStep() is SyncStep.Send)
            phone.failed("no network")
            val wait = phone.nextStep()
            assertTrue(wait is SyncStep.Wait, "after a failure the next step is a wait")
            wait as SyncStep.Wait
            assertEquals("unreachable", wait.code)
            assertEquals(1u, wait.failures)
            assertTrue(wait.millis in 400uL..600uL, "first backoff ${wait.millis} ms")
            assertEquals(SyncStatus.Pending, phone.show(id).sync)

            // The network is back: the same sync goes on (after the wait) to the end.
            http.online = true
            var progressSeen = 0
            Thread.sleep(wait.millis.toLong())
            val report = http.drive(phone) { progressSeen++ } ?: error("the sync did not end")
            assertTrue(report.pushed >= 1uL, "pushed ${report.pushed}")
            assertTrue(progressSeen >= 1)
            assertEquals(SyncStatus.Synced, phone.show(id).sync)
            assertEquals(0uL, phone.pendingCount())
            assertNull(phone.progress(), "no sync runs after Done")
            // The demo's records of the commune came down too.
            val all = phone.list(RecordKind.GBV_CASE)
            assertTrue(all.size > 1, "the commune's records were pulled (${all.size})")
            println("offline case synced: pushed=${report.pushed} pulled=${report.pulled} requests=${report.requests} bytes_up=${report.bytesUp} bytes_down=${report.bytesDown}")

            // The server holds it, with the service the officer recorded.
            val (status, body) = server.get("/api/v1/records/$id", reviewerToken())
            assertEquals(200, status)
            assertTrue(body.contains("\"kind\":\"health\""), "the server's copy has the service")
        }
    }

    @Test
    fun `a second phone editing the same field makes a conflict both phones show`() {
        val keys = MemoryKeystore()
        val http = AppHttp()
        Phone.open(storeDir("conflict-a"), keys).use { a ->
            Phone.open(storeDir("conflict-b"), keys).use { b ->
                assertNotEquals(a.deviceId(), b.deviceId())
                // Phone A drives its own HTTP; phone B lets the library make the calls.
                http.login(a, server.url, officer, officerPassword)
                b.login(server.url, officer, officerPassword, null)

                val id = a.create(RecordKind.GBV_CASE, case(1988))
                assertNotNull(http.sync(a))
                val heard = mutableListOf<SyncProgress>()
                val first = b.sync(0uL, object : SyncListener {
                    override fun progress(progress: SyncProgress) {
                        heard.add(progress)
                    }
                })
                assertTrue(first.pulled >= 1uL)
                assertTrue(heard.isNotEmpty(), "the listener heard the progress")
                assertTrue(b.show(id).json.contains("\"birth_year\":1988"))

                // Both officers correct the same field, each offline.
                a.set(id, "victim.birth_year", "1990")
                b.set(id, "victim.birth_year", "1991")
                assertNotNull(http.sync(a))
                val second = b.sync(0uL, null)
                assertEquals(1uL, second.pushed)
                assertNotNull(http.sync(a))

                for ((phone, mine) in listOf(a to "1990", b to "1991")) {
                    val record = phone.show(id)
                    assertEquals(SyncStatus.Synced, record.sync)
                    assertEquals(1, record.conflicts.size, "one field in conflict")
                    val conflict = record.conflicts[0]
                    assertEquals("victim.birth_year", conflict.path)
                    assertEquals(setOf("1990", "1991"), conflict.values.map { it.json }.toSet())
                    assertEquals(mine, conflict.values.single { it.thisDevice }.json, "each phone knows which value is its own")
                }
                assertTrue(b.list(null).any { it.id == id && it.conflicts.isNotEmpty() })

                // The reviewer sees it on the server.
                val (status, body) = server.get("/api/v1/conflicts?org_unit=$commune", reviewerToken())
                assertEquals(200, status)
                assertTrue(body.contains(id), "the server lists the conflict")
            }
        }
    }

    @Test
    fun `a device revoked by an administrator is wiped at its next sync`() {
        val keys = MemoryKeystore()
        val http = AppHttp()
        val dir = storeDir("revoked")
        var deviceId = ""
        Phone.open(dir, keys).use { phone ->
            deviceId = phone.deviceId()
            http.login(phone, server.url, officer, officerPassword)
            val id = phone.create(RecordKind.GBV_CASE, case(1975))
            assertNotNull(http.sync(phone))
            assertEquals(SyncStatus.Synced, phone.show(id).sync)

            val admin = server.token("admin", "demo-admin-2025")
            val (status, _) = server.call("POST", "/api/v1/users/$officer/devices/$deviceId/revoke", admin, null)
            assertEquals(204, status)

            val e = assertThrows<GesyncException.DeviceRevoked> { http.sync(phone) }
            assertEquals("device_revoked", e.code())
            assertTrue(e.wiped())
            assertFalse(e.isTransient())
            assertEquals(listOf(dir), keys.forgotten.toList(), "the key was forgotten first")
            assertFalse(File(dir, "records").exists(), "no record file is left")
            assertFalse(File(dir, "state").exists())
            assertThrows<GesyncException.DeviceRevoked> { phone.list(null) }
        }
        // The app starts again with a new, empty store: a new device.
        Phone.open(dir, keys).use { fresh ->
            assertNotEquals(deviceId, fresh.deviceId())
            assertTrue(fresh.list(null).isEmpty())
            assertFalse(fresh.loggedIn())
        }
    }

    @Test
    fun `errors carry codes an app switches on`() {
        val keys = MemoryKeystore()
        val http = AppHttp()
        Phone.open(storeDir("errors"), keys).use { phone ->
            val schema = assertThrows<GesyncException.Schema> {
                phone.create(RecordKind.GBV_CASE, """{"commune":"$commune","detected_on":"2025-10-02","victim":{"sex":"female","birth_year":"old"}}""")
            }
            assertEquals("schema", schema.code())
            assertEquals("victim.birth_year", schema.path)
            assertEquals("wrong_type", schema.problem)

            assertEquals("bad_json", assertThrows<GesyncException.BadJson> { phone.create(RecordKind.NEWS_ITEM, "{") }.code())
            assertEquals("bad_id", assertThrows<GesyncException.BadId> { phone.show("not-an-id") }.code())
            assertEquals(
                "unknown_record",
                assertThrows<GesyncException.UnknownRecord> { phone.show("00000000-0000-4000-8000-000000000000") }.code(),
            )
            assertEquals("not_logged_in", assertThrows<GesyncException.NotLoggedIn> { phone.beginSync() }.code())
            assertEquals("not_logged_in", assertThrows<GesyncException.NotLoggedIn> { phone.sync(0uL, null) }.code())
            assertEquals("usage", assertThrows<GesyncException.Usage> { phone.nextStep() }.code())

            // A wrong password, through the app's HTTP and through the library's.
            val refused = assertThrows<GesyncException.LoginRefused> { http.login(phone, server.url, "huyen.tanyen", "not-the-password") }
            assertEquals("login_refused", refused.code())
            assertThrows<GesyncException.LoginRefused> { phone.login(server.url, "huyen.tanyen", "not-the-password", null) }

            // No server there: transient, for the scheduler to retry.
            val closed = java.net.ServerSocket(0).use { it.localPort }
            val down = assertThrows<GesyncException.Unreachable> { phone.login("http://127.0.0.1:$closed", officer, officerPassword, null) }
            assertTrue(down.isTransient())
            assertFalse(phone.loggedIn())
        }
    }

    @Test
    fun `the store key comes from the app and only that key opens the store`() {
        val keys = MemoryKeystore()
        val dir = storeDir("keys")
        val id = Phone.open(dir, keys).use { it.create(RecordKind.NEWS_ITEM, """{"commune":"$commune","published_on":"2025-11-05","channel":"loudspeaker","title":"Tuần lễ bình đẳng giới"}""") }
        Phone.open(dir, keys).use { again -> assertEquals(RecordKind.NEWS_ITEM, again.show(id).kind) }

        val other = object : KeyProvider {
            override fun createKey(storeDir: String) = ByteArray(32) { 7 }
            override fun openKey(storeDir: String) = ByteArray(32) { 7 }
            override fun forgetKey(storeDir: String) {}
        }
        assertEquals("decrypt", assertThrows<GesyncException.Decrypt> { Phone.open(dir, other) }.code())

        val short = object : KeyProvider {
            override fun createKey(storeDir: String) = ByteArray(16)
            override fun openKey(storeDir: String) = ByteArray(16)
            override fun forgetKey(storeDir: String) {}
        }
        assertEquals("config", assertThrows<GesyncException.Config> { Phone.open(storeDir("short-key"), short) }.code())
        // A key store that fails (here: no key kept for this store) fails the opening, clearly.
        assertEquals("config", assertThrows<GesyncException.Config> { Phone.open(dir, MemoryKeystore()) }.code())
    }
}
