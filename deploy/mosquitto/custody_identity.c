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
 * Configuration, in the TLS listener's section (per_listener_settings true):
 *   plugin /path/to/custody_identity.so
 *   plugin_opt_worker_identities ledger      (CNs allowed "CN/WORKER"; spaces or commas between)
 * Build: deploy/mosquitto/build-plugin.sh (gcc; headers from Debian mosquitto-dev,
 * libmosquitto-dev and libssl-dev). API: mosquitto_plugin.h and mosquitto_broker.h of
 * Mosquitto 2.0.
 */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

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

struct identity_plugin {
	mosquitto_plugin_id_t *id;
	int worker_identity_count;
	char worker_identities[MAX_WORKER_IDENTITIES][MAX_NAME + 1];
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

/* State lives in userdata, not in statics: each "plugin" line gets its own. */
int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	struct identity_plugin *plugin;
	int i, rc;

	plugin = mosquitto_calloc(1, sizeof(*plugin));
	if(plugin == NULL){
		return MOSQ_ERR_NOMEM;
	}
	plugin->id = identifier;
	for(i = 0; i < option_count; i++){
		if(strcmp(options[i].key, OPTION_WORKER_IDENTITIES) != 0){
			mosquitto_log_printf(MOSQ_LOG_ERR, "custody_identity: unknown option plugin_opt_%s",
					options[i].key);
			mosquitto_free(plugin);
			return MOSQ_ERR_INVAL;
		}
		if(!parse_worker_identities(plugin, options[i].value)){
			mosquitto_log_printf(MOSQ_LOG_ERR, "custody_identity: plugin_opt_%s: at most %d "
					"names of 1-64 characters A-Z a-z 0-9 . _ -", OPTION_WORKER_IDENTITIES,
					MAX_WORKER_IDENTITIES);
			mosquitto_free(plugin);
			return MOSQ_ERR_INVAL;
		}
	}
	rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, plugin);
	if(rc != MOSQ_ERR_SUCCESS){
		mosquitto_free(plugin);
		return rc;
	}
	*userdata = plugin;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct identity_plugin *plugin = userdata;
	int rc;

	(void)options;
	(void)option_count;

	rc = mosquitto_callback_unregister(plugin->id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_free(plugin);
	return rc;
}
