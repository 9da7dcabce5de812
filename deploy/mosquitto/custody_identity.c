/*
 * custody_identity: Mosquitto 2.0 plugin (plugin API v5) that makes the client certificate the
 * only identity on the custody listener, the MQTT client id included.
 *
 * Why a plugin. Sessions are keyed by client id, and a CONNECT with a client id already in use
 * disconnects that client and, with Clean Start 0, takes over its session (MQTT 5.0 §3.1.4-3).
 * The ACL (acl_file) only governs topics; it cannot stop a valid certificate from connecting
 * under the ledger's or another gateway's client id. Mosquitto 2.0.11 has no option that ties
 * the client id to a certificate and still lets one identity hold several sessions:
 *   - use_username_as_clientid replaces the client id with the username (the CN): one session
 *     per certificate identity, so ledger workers sharing $share/ledger would disconnect each
 *     other unless each had its own CN and its own block in the ACL;
 *   - clientid_prefixes is one global prefix for everybody (and deprecated);
 *   - with use_identity_as_username, src/handle_connect.c skips mosquitto_unpwd_check() for
 *     certificate clients ("Authentication assumed to be cleared"), so MOSQ_EVT_BASIC_AUTH
 *     plugins, the dynamic-security plugin's per-client "clientid" included, never run for them
 *     (the same in 2.0.20 and on develop).
 * So this listener does not set use_identity_as_username: Mosquitto then calls
 * mosquitto_unpwd_check() for every CONNECT, whose MOSQ_EVT_BASIC_AUTH callbacks are this
 * plugin's (src/security.c). The plugin
 *   1. reads the peer certificate (mosquitto_client_certificate; require_certificate true on the
 *      listener guarantees a verified one) and its single CN, which must be 1-64 characters of
 *      A-Z a-z 0-9 . _ - (our CA's device ids and "ledger", custody/event.py);
 *   2. makes it the username (mosquitto_set_username), replacing whatever the client sent, as
 *      use_identity_as_username would: the ACL's "user" lines and %u patterns match the CN;
 *   3. accepts the CONNECT only when the client id is the CN itself or, for the identities named
 *      in the option worker_identities, the CN followed by "/" and a worker name of 1-64 of the
 *      same characters ("ledger/2": ledger workers sharing one subscription). A CN contains no
 *      "/", so the client ids of different identities never collide. Every other identity has
 *      exactly one client id: a stolen gateway certificate cannot open extra sessions (each
 *      would be kept for persistent_client_expiration) or extra connections to flood with.
 * Anything else returns MOSQ_ERR_AUTH: the client gets CONNACK 0x87 "Not authorized" (MQTT 3.1.1:
 * return code 5) before any session is touched, and the broker logs the refusal.
 *
 * Fail-closed: the callback never returns MOSQ_ERR_PLUGIN_DEFER. Without this plugin the listener
 * has neither a password file nor anonymous access, so every client would be refused, never let
 * in under a username of its choosing. A client that asks for MQTT 5 enhanced authentication
 * (Authentication Method) is refused by Mosquitto itself ("bad authentication method"), since no
 * plugin handles MOSQ_EVT_EXT_AUTH_START.
 *
 * Publish budget. Mosquitto 2.0 PUBACKs a QoS 1 PUBLISH as soon as it is queued to the
 * subscribers and never enforces the Receive Maximum it announces (src/handle_publish.c), so one
 * device pipelining publishes on its own events topic can outpace the ledger and fill the queue
 * of the ledger's shared-subscription session, after which the broker drops every device's
 * batches to it. So the plugin also registers MOSQ_EVT_MESSAGE, which 2.0.11 calls for every
 * PUBLISH a client sends, after the ACL check and before the message is stored or queued to
 * anyone (src/handle_publish.c, plugin__handle_message in src/plugin.c), and keeps a token
 * bucket per identity (the certificate CN, i.e. the username) for messages and payload bytes per
 * second, each with a burst. A PUBLISH over the budget returns MOSQ_ERR_ACL_DENIED: 2.0.11 then
 * frees the message without distributing it, answers QoS 1 with PUBACK 0x87 "Not authorized"
 * and keeps the connection; a QoS 0 one is dropped silently. There is no other way to refuse:
 * 2.0 ignores the event's reason_code, and handle__publish returns any other error to the
 * network loop, which disconnects the client (MOSQ_ERR_QUOTA_EXCEEDED, answered with 0x97
 * "Quota exceeded", only comes with Mosquitto 2.1). A refused publish costs no tokens, so a client
 * sending flat out gets exactly the budget through. The identities in worker_identities (the
 * ledger, which publishes the acks) are not limited.
 *   The bucket belongs to the identity, not the connection: a reconnect keeps it. An entry is
 * forgotten only once its buckets have refilled completely (idle for at most burst/rate seconds),
 * when it equals a new entry, so forgetting never grants anything. The entries live in one
 * open-addressing table of at most publish_identities entries, allocated at start; when that many
 * identities are all mid-burst, a new identity's publishes are refused (fail-closed) and logged.
 * Over-budget refusals are logged at most once per REPORT_INTERVAL_S per identity, with a count.
 *
 * Configuration, in the TLS listener's section (per_listener_settings true):
 *   plugin /path/to/custody_identity.so
 *   plugin_opt_worker_identities ledger      (CNs allowed "CN/WORKER"; spaces or commas between)
 *   plugin_opt_publish_messages_per_s 100    (each identity's budget; these are the defaults)
 *   plugin_opt_publish_message_burst 200
 *   plugin_opt_publish_bytes_per_s 4194304   (payload bytes)
 *   plugin_opt_publish_byte_burst 8388608    (must exceed the largest message, or it never passes)
 *   plugin_opt_publish_identities 65536      (identities tracked at once: 224 bytes each, 14 MiB)
 * Build: deploy/mosquitto/build-plugin.sh (gcc; headers from Debian mosquitto-dev,
 * libmosquitto-dev and libssl-dev). API: mosquitto_plugin.h and mosquitto_broker.h of
 * Mosquitto 2.0.
 */
/* clock_gettime under -std=c11 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

/* custody/event.py validate_identifier: device ids, site ids and so certificate CNs. */
#define MAX_NAME 64
#define MAX_WORKER_IDENTITIES 8
/* "CN/WORKER" */
#define WORKER_SEPARATOR '/'
#define OPTION_WORKER_IDENTITIES "worker_identities"
#define OPTION_MESSAGES_PER_S "publish_messages_per_s"
#define OPTION_MESSAGE_BURST "publish_message_burst"
#define OPTION_BYTES_PER_S "publish_bytes_per_s"
#define OPTION_BYTE_BURST "publish_byte_burst"
#define OPTION_IDENTITIES "publish_identities"

/* Defaults, the values custody.conf sets (its "Limits" section explains them). */
#define DEFAULT_MESSAGES_PER_S 100.0
#define DEFAULT_MESSAGE_BURST 200.0
#define DEFAULT_BYTES_PER_S (4.0 * 1024 * 1024)
#define DEFAULT_BYTE_BURST (8.0 * 1024 * 1024)
#define DEFAULT_IDENTITIES 65536
/* Upper bounds for the options: sanity, not policy (2^20 identities: 224 MiB of table). */
#define MAX_RATE 1e12
#define MAX_IDENTITIES (1 << 20)
/* One log line per identity per this long while it stays over budget. */
#define REPORT_INTERVAL_S 10
#define NS_PER_S 1000000000LL

struct budget {
	double messages_per_s;
	double message_burst;
	double bytes_per_s;
	double byte_burst;
};

/* One identity's buckets. identity[0] == '\0' marks a free slot. */
struct publisher {
	char identity[MAX_NAME + 1];
	uint32_t hash;
	uint32_t refused;  /* since the last report */
	double messages;  /* tokens */
	double bytes;
	int64_t refilled_ns;  /* CLOCK_MONOTONIC */
	int64_t reported_ns;
};

/* Linear probing over a power-of-two number of slots, at most half of them used. */
struct publisher_table {
	struct publisher *slots;
	size_t mask;
	size_t count;
	size_t limit;
	int64_t swept_ns;
	int64_t full_reported_ns;
};

struct identity_plugin {
	mosquitto_plugin_id_t *id;
	int worker_identity_count;
	char worker_identities[MAX_WORKER_IDENTITIES][MAX_NAME + 1];
	struct budget budget;
	struct publisher_table publishers;
};

static bool name_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
		|| c == '.' || c == '_' || c == '-';
}

/* 1..MAX_NAME characters of [A-Za-z0-9._-], exactly len bytes (no embedded NUL). */
static bool valid_name(const char *s, size_t len)
{
	size_t i;

	if(len == 0 || len > MAX_NAME){
		return false;
	}
	for(i = 0; i < len; i++){
		if(!name_char((unsigned char)s[i])){
			return false;
		}
	}
	return true;
}

/*
 * Copies the certificate's only CN into cn (MAX_NAME + 1 bytes). False when the subject has no CN
 * or several, or the CN is not a valid name: such certificates are not ours, and a CN with
 * "/", "+" or "#" would be unsafe in %u ACL patterns (CVE-2017-7650) and in client ids.
 */
static bool certificate_cn(X509 *cert, char *cn)
{
	X509_NAME *subject = X509_get_subject_name(cert);
	X509_NAME_ENTRY *entry;
	ASN1_STRING *data;
	int index, len;

	if(subject == NULL){
		return false;
	}
	index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
	if(index < 0 || X509_NAME_get_index_by_NID(subject, NID_commonName, index) >= 0){
		return false;
	}
	entry = X509_NAME_get_entry(subject, index);
	data = entry ? X509_NAME_ENTRY_get_data(entry) : NULL;
	if(data == NULL){
		return false;
	}
	len = ASN1_STRING_length(data);
	/* The bytes as encoded: a UTF8String or PrintableString of our characters is plain ASCII;
	 * any other encoding of them (BMPString: UTF-16) contains bytes valid_name refuses. */
	if(len <= 0 || !valid_name((const char *)ASN1_STRING_get0_data(data), (size_t)len)){
		return false;
	}
	memcpy(cn, ASN1_STRING_get0_data(data), (size_t)len);
	cn[len] = '\0';
	return true;
}

static bool is_worker_identity(const struct identity_plugin *plugin, const char *cn)
{
	int i;

	for(i = 0; i < plugin->worker_identity_count; i++){
		if(strcmp(plugin->worker_identities[i], cn) == 0){
			return true;
		}
	}
	return false;
}

/* The client id is the CN, or for a worker identity the CN, "/" and a worker name. */
static bool client_id_allowed(const struct identity_plugin *plugin, const char *client_id,
		const char *cn)
{
	size_t cn_len = strlen(cn);
	size_t id_len = strlen(client_id);

	if(strncmp(client_id, cn, cn_len) != 0){
		return false;
	}
	if(id_len == cn_len){
		return true;
	}
	return client_id[cn_len] == WORKER_SEPARATOR
		&& is_worker_identity(plugin, cn)
		&& valid_name(client_id + cn_len + 1, id_len - cn_len - 1);
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	const struct identity_plugin *plugin = userdata;
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *client_id = mosquitto_client_id(ed->client);
	const char *address = mosquitto_client_address(ed->client);
	char cn[MAX_NAME + 1];
	X509 *cert;
	bool have_cn;

	(void)event;
	if(client_id == NULL){
		client_id = "";
	}
	if(address == NULL){
		address = "?";
	}

	/* A new reference: the caller frees it (mosquitto_broker.h, mosquitto_client_certificate). */
	cert = mosquitto_client_certificate(ed->client);
	if(cert == NULL){
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"custody_identity: refused client id '%s' from %s: no client certificate",
				client_id, address);
		return MOSQ_ERR_AUTH;
	}
	have_cn = certificate_cn(cert, cn);
	X509_free(cert);
	if(!have_cn){
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"custody_identity: refused client id '%s' from %s: the certificate has no "
				"single CN of 1-64 characters A-Z a-z 0-9 . _ -", client_id, address);
		return MOSQ_ERR_AUTH;
	}
	if(!client_id_allowed(plugin, client_id, cn)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"custody_identity: refused client id '%s' from %s: certificate CN '%s' must "
				"connect as '%s'%s", client_id, address, cn, cn,
				is_worker_identity(plugin, cn) ? " or 'CN/WORKER'" : "");
		return MOSQ_ERR_AUTH;
	}
	if(mosquitto_set_username(ed->client, cn) != MOSQ_ERR_SUCCESS){
		return MOSQ_ERR_AUTH;
	}
	return MOSQ_ERR_SUCCESS;
}

/* --- Publish budget --- */

static int64_t monotonic_ns(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC: wall-clock steps (NTP, an operator) must not refill or drain buckets. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* FNV-1a, 32 bits: identities are short and chosen by our CA, not by the client. */
static uint32_t name_hash(const char *s)
{
	uint32_t h = 2166136261u;

	while(*s){
		h = (h ^ (unsigned char)*s++) * 16777619u;
	}
	return h;
}

/* Tokens after the time since the last refill, capped at the burst. */
static double refilled(double tokens, double rate, double burst, int64_t elapsed_ns)
{
	double value = tokens + rate * (double)elapsed_ns / (double)NS_PER_S;

	return value < burst ? value : burst;
}

static void refill(struct publisher *p, const struct budget *b, int64_t now)
{
	int64_t elapsed = now - p->refilled_ns;

	if(elapsed > 0){
		p->messages = refilled(p->messages, b->messages_per_s, b->message_burst, elapsed);
		p->bytes = refilled(p->bytes, b->bytes_per_s, b->byte_burst, elapsed);
		p->refilled_ns = now;
	}
}

/* Both buckets full again: the entry is the same as a new one and may be forgotten. */
static bool is_idle(const struct publisher *p, const struct budget *b, int64_t now)
{
	int64_t elapsed = now - p->refilled_ns;

	return refilled(p->messages, b->messages_per_s, b->message_burst, elapsed) >= b->message_burst
		&& refilled(p->bytes, b->bytes_per_s, b->byte_burst, elapsed) >= b->byte_burst;
}

/*
 * Frees slot `hole` by backward-shift deletion (no tombstones): each later entry of the same run
 * moves into the hole unless that would put it before its home slot. Entries only move towards
 * the hole, i.e. to `hole` or later, which is what publisher_sweep relies on.
 */
static void publisher_remove(struct publisher_table *t, size_t hole)
{
	size_t j = hole;

	for(;;){
		j = (j + 1) & t->mask;
		if(t->slots[j].identity[0] == '\0'){
			break;
		}
		/* Movable when its home is no nearer to j than the hole is. */
		if(((j - (t->slots[j].hash & t->mask)) & t->mask) >= ((j - hole) & t->mask)){
			t->slots[hole] = t->slots[j];
			hole = j;
		}
	}
	t->slots[hole].identity[0] = '\0';
	t->count--;
}

/*
 * Forgets every idle entry. Called only when the table is at its limit, at most once a second, so
 * its cost (one pass over the slots, about a millisecond at the default size) stays rare.
 */
static void publisher_sweep(struct publisher_table *t, const struct budget *b, int64_t now)
{
	size_t i = 0;

	t->swept_ns = now;
	while(i <= t->mask){
		struct publisher *p = &t->slots[i];

		if(p->identity[0] != '\0' && is_idle(p, b, now)){
			if(p->refused > 0){
				mosquitto_log_printf(MOSQ_LOG_NOTICE, "custody_identity: '%s' had %u more "
						"publishes refused over its budget, then went idle", p->identity,
						p->refused);
			}
			publisher_remove(t, i);  /* slot i now holds the next entry, if any: look again */
		}else{
			i++;
		}
	}
}

/* The identity's entry, found or added with full buckets; NULL when the table is at its limit. */
static struct publisher *publisher_get(struct publisher_table *t, const struct budget *b,
		const char *identity, int64_t now)
{
	uint32_t hash = name_hash(identity);
	size_t i;
	struct publisher *p;

	for(;;){
		for(i = hash & t->mask; t->slots[i].identity[0] != '\0'; i = (i + 1) & t->mask){
			if(t->slots[i].hash == hash && strcmp(t->slots[i].identity, identity) == 0){
				return &t->slots[i];
			}
		}
		if(t->count < t->limit){
			break;
		}
		if(now - t->swept_ns < NS_PER_S){
			return NULL;
		}
		publisher_sweep(t, b, now);  /* moves entries: probe again */
	}
	p = &t->slots[i];
	memset(p, 0, sizeof(*p));
	strcpy(p->identity, identity);  /* fits: the caller checked its length */
	p->hash = hash;
	p->messages = b->message_burst;
	p->bytes = b->byte_burst;
	p->refilled_ns = now;
	p->reported_ns = now - REPORT_INTERVAL_S * NS_PER_S;
	t->count++;
	return p;
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct identity_plugin *plugin = userdata;
	struct mosquitto_evt_message *ed = event_data;
	const struct budget *b = &plugin->budget;
	struct publisher_table *t = &plugin->publishers;
	/* The certificate CN: on_basic_auth set it for every client of this listener. */
	const char *identity = mosquitto_client_username(ed->client);
	const char *client_id = mosquitto_client_id(ed->client);
	struct publisher *p;
	int64_t now;

	(void)event;
	if(identity == NULL || strlen(identity) > MAX_NAME){
		return MOSQ_ERR_ACL_DENIED;  /* not admitted by on_basic_auth: cannot happen */
	}
	if(is_worker_identity(plugin, identity)){
		return MOSQ_ERR_SUCCESS;
	}
	now = monotonic_ns();
	p = publisher_get(t, b, identity, now);
	if(p == NULL){
		if(now - t->full_reported_ns >= REPORT_INTERVAL_S * NS_PER_S){
			t->full_reported_ns = now;
			mosquitto_log_printf(MOSQ_LOG_WARNING, "custody_identity: refused a publish from "
					"'%s': %zu identities are mid-burst, the most plugin_opt_%s tracks",
					identity, t->count, OPTION_IDENTITIES);
		}
		return MOSQ_ERR_ACL_DENIED;
	}
	refill(p, b, now);
	if(p->messages >= 1.0 && p->bytes >= (double)ed->payloadlen){
		p->messages -= 1.0;
		p->bytes -= (double)ed->payloadlen;
		return MOSQ_ERR_SUCCESS;
	}
	p->refused++;
	if(now - p->reported_ns >= REPORT_INTERVAL_S * NS_PER_S){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "custody_identity: client '%s' is over its publish "
				"budget (%.0f messages/s, %.0f bytes/s): refused %u publishes in the last %.0f s",
				client_id ? client_id : identity, b->messages_per_s, b->bytes_per_s, p->refused,
				(double)(now - p->reported_ns) / (double)NS_PER_S);
		p->refused = 0;
		p->reported_ns = now;
	}
	return MOSQ_ERR_ACL_DENIED;
}

/* A number in (0, max], the whole value (strtod: no trailing text, no inf or nan). */
static bool parse_positive(const char *value, double max, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(value, &end);
	if(end == value || *end != '\0' || errno != 0 || !(v > 0.0) || v > max){
		return false;
	}
	*out = v;
	return true;
}

/* Slots: the smallest power of two at least twice the limit (load factor at most 1/2). */
static bool publisher_table_init(struct publisher_table *t, size_t limit)
{
	size_t slots = 1;

	while(slots < 2 * limit){
		slots *= 2;
	}
	t->slots = mosquitto_calloc(slots, sizeof(*t->slots));
	if(t->slots == NULL){
		return false;
	}
	t->mask = slots - 1;
	t->count = 0;
	t->limit = limit;
	/* Long enough ago that the first sweep and the first report may run at once. */
	t->swept_ns = monotonic_ns() - REPORT_INTERVAL_S * NS_PER_S;
	t->full_reported_ns = t->swept_ns;
	return true;
}

/* worker_identities: names separated by spaces or commas. False on a bad name or too many. */
static bool parse_worker_identities(struct identity_plugin *plugin, const char *value)
{
	const char *p = value;
	size_t len;

	while(*p){
		if(*p == ' ' || *p == ',' || *p == '\t'){
			p++;
			continue;
		}
		len = strcspn(p, " ,\t");
		if(!valid_name(p, len) || plugin->worker_identity_count == MAX_WORKER_IDENTITIES){
			return false;
		}
		memcpy(plugin->worker_identities[plugin->worker_identity_count], p, len);
		plugin->worker_identities[plugin->worker_identity_count][len] = '\0';
		plugin->worker_identity_count++;
		p += len;
	}
	return true;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;

	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

/* One plugin_opt_ line. False (after logging why) on an unknown option or a bad value. */
static bool apply_option(struct identity_plugin *plugin, const struct mosquitto_opt *option,
		size_t *identities)
{
	struct budget *b = &plugin->budget;
	double *target = NULL;
	double value;

	if(strcmp(option->key, OPTION_WORKER_IDENTITIES) == 0){
		if(!parse_worker_identities(plugin, option->value)){
			mosquitto_log_printf(MOSQ_LOG_ERR, "custody_identity: plugin_opt_%s: at most %d "
					"names of 1-64 characters A-Z a-z 0-9 . _ -", OPTION_WORKER_IDENTITIES,
					MAX_WORKER_IDENTITIES);
			return false;
		}
		return true;
	}
	if(strcmp(option->key, OPTION_MESSAGES_PER_S) == 0){
		target = &b->messages_per_s;
	}else if(strcmp(option->key, OPTION_MESSAGE_BURST) == 0){
		target = &b->message_burst;
	}else if(strcmp(option->key, OPTION_BYTES_PER_S) == 0){
		target = &b->bytes_per_s;
	}else if(strcmp(option->key, OPTION_BYTE_BURST) == 0){
		target = &b->byte_burst;
	}else if(strcmp(option->key, OPTION_IDENTITIES) != 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "custody_identity: unknown option plugin_opt_%s",
				option->key);
		return false;
	}
	if(!parse_positive(option->value, target ? MAX_RATE : MAX_IDENTITIES, &value)
			|| (target == NULL && value != (double)(size_t)value)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "custody_identity: plugin_opt_%s: '%s' is not a "
				"positive %s", option->key, option->value,
				target ? "number" : "whole number of at most 1048576");
		return false;
	}
	if(target){
		*target = value;
	}else{
		*identities = (size_t)value;
	}
	return true;
}

/* State lives in userdata, not in statics: each "plugin" line gets its own. */
int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	struct identity_plugin *plugin;
	size_t identities = DEFAULT_IDENTITIES;
	int i, rc;

	plugin = mosquitto_calloc(1, sizeof(*plugin));
	if(plugin == NULL){
		return MOSQ_ERR_NOMEM;
	}
	plugin->id = identifier;
	plugin->budget.messages_per_s = DEFAULT_MESSAGES_PER_S;
	plugin->budget.message_burst = DEFAULT_MESSAGE_BURST;
	plugin->budget.bytes_per_s = DEFAULT_BYTES_PER_S;
	plugin->budget.byte_burst = DEFAULT_BYTE_BURST;
	for(i = 0; i < option_count; i++){
		if(!apply_option(plugin, &options[i], &identities)){
			mosquitto_free(plugin);
			return MOSQ_ERR_INVAL;
		}
	}
	/* A burst below one message would refuse everything. */
	if(plugin->budget.message_burst < 1.0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "custody_identity: plugin_opt_%s must be at least 1",
				OPTION_MESSAGE_BURST);
		mosquitto_free(plugin);
		return MOSQ_ERR_INVAL;
	}
	if(!publisher_table_init(&plugin->publishers, identities)){
		mosquitto_free(plugin);
		return MOSQ_ERR_NOMEM;
	}
	rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, plugin);
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_MESSAGE, on_message, NULL, plugin);
		if(rc != MOSQ_ERR_SUCCESS){
			mosquitto_callback_unregister(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
		}
	}
	if(rc != MOSQ_ERR_SUCCESS){
		mosquitto_free(plugin->publishers.slots);
		mosquitto_free(plugin);
		return rc;
	}
	mosquitto_log_printf(MOSQ_LOG_INFO, "custody_identity: publish budget per identity %.0f "
			"messages/s (burst %.0f), %.0f bytes/s (burst %.0f), %zu identities tracked",
			plugin->budget.messages_per_s, plugin->budget.message_burst,
			plugin->budget.bytes_per_s, plugin->budget.byte_burst, identities);
	*userdata = plugin;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct identity_plugin *plugin = userdata;
	int rc, rc2;

	(void)options;
	(void)option_count;

	rc = mosquitto_callback_unregister(plugin->id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	rc2 = mosquitto_callback_unregister(plugin->id, MOSQ_EVT_MESSAGE, on_message, NULL);
	mosquitto_free(plugin->publishers.slots);
	mosquitto_free(plugin);
	return rc != MOSQ_ERR_SUCCESS ? rc : rc2;
}
