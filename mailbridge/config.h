/* config: mailbridge.conf (INI via libinih) into struct config.
 *
 * Every key lives in one table (config.c) with its section, type, default
 * and whether it is a secret. Parsing collects *all* errors with file:line
 * and reports them together; config_load fails once at the end. Paths are
 * resolved relative to the directory of the file that names them. */
#ifndef MB_CONFIG_H
#define MB_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "netaddr.h"
#include "tls_mode.h"

#define CONFIG_MAX_KEYS 120

enum provider_mode { PROVIDER_DEFAULT, PROVIDER_CUSTOM };
enum delivered_on { DELIVERED_ON_RELAY, DELIVERED_ON_DSN };

struct mail_server_config {
	char *host;
	long port;
	char *tls;                 /* "none" | "starttls" | "tls" */
	enum tls_mode tls_mode;
	bool tls_verify;           /* verify chain + host name (default yes) */
	char *ca_file;             /* extra trust anchors, else system store */
	char *user;
	char *password;            /* secret; filled from password_file too */
	char *password_file;
	bool allow_plaintext_auth; /* AUTH/LOGIN without TLS to a host that is not loopback */
};

struct location_config {
	char *id;                  /* HighLevel locationId */
	char *file;                /* where its section starts, for messages */
	int line;
	char **key_where;          /* while loading: "file:line" per key set (by table index) */
	char *mode;                /* "default" | "custom" */
	enum provider_mode provider_mode;
	char *provider_id;         /* conversationProviderId (custom mode) */
	char *from;                /* "Name <addr>" identity */
	char *from_name;           /* parsed from `from` */
	char *from_addr;
	bool allow_from_override;  /* honour the webhook's emailFrom address */
	char *reply_domain;        /* plus-address and Message-ID domain */
	char *delivered_on_s;
	enum delivered_on delivered_on;
	char *token;               /* static API token (stand-in before OAuth) */
	struct mail_server_config smtp;
	struct mail_server_config imap;
	char *imap_folder;
	char *imap_after;          /* "seen" | "none" | "move:<folder>" */
	char *auto_replies;        /* "post" | "skip" */
	char *other_sender_replies; /* a reply in a thread from another than its contact: "own" (the
	                            * sender's conversation) | "thread" (the thread's) */
	char *lmtp_addresses;      /* extra addresses LMTP intake routes here */
	char *reply_address;       /* the mailbox replies go to, as <local>+<token>@<domain>;
	                            * default imap_user when it is an address, else from
	                            * (or reply@reply_domain when reply_domain is set) */
	char *return_path;         /* the mailbox DSNs go to, as <local>+b<token>@<domain>;
	                            * default the reply_address's */
	struct plus_box {          /* derived: where a token goes */
		char *local, *domain;
		const char *tag;           /* "" or "b" (a bounce in the reply mailbox) */
	} reply_box, return_box;
	bool unsubscribe;          /* List-Unsubscribe (one-click and mailto) on its email */
	bool dnd_on_hard_bounce;   /* a 5.1.x DSN for the contact's own email sets its Email DND */
	bool track_opens;          /* a 1x1 image at <public_url>/o/<token>.gif in the HTML part */
	bool track_clicks;         /* http(s) links in the HTML part through <public_url>/c/<token> */
	long track_min_delay;      /* s after the send before a hit counts (scanners fetch at once) */
	char *dkim_selector;       /* doctor: the DKIM selector the relay signs with */
	char *relay_ips;           /* doctor: the addresses the relay sends from, as the world sees
	                            * them (SPF must list them); default: smtp_host's */
	char *sms_plugin;          /* plugin name serving type SMS here, or NULL */
	char *call_plugin;         /* plugin name serving type Call here, or NULL */
	char *sms_provider_id;     /* conversationProviderId of an extra SMS channel */
	char *call_provider_id;    /* conversationProviderId of the Call provider */
	bool imap_idle;            /* use IDLE when offered (else poll) */
	long idle_interval;        /* seconds before IDLE is re-issued */
	long poll_interval;        /* seconds between polls without IDLE */
};

struct config {
	char *path;                /* the main file */
	char *dir;                 /* its directory */
	/* [server] */
	char *listen;              /* "host:port" */
	char *listen_host;
	int listen_port;
	char *instance;            /* this instance's name (NULL: host:port, see instance.c) */
	char *public_url;
	long max_body;
	long conn_limit;
	long conn_timeout;
	long imap_connect_rate;    /* IMAP logins a second to one server at start-up */
	long imap_workers;         /* threads that run IMAP logins, fetches and re-IDLEs */
	long per_ip_limit;         /* connections from one address; 0: no limit */
	long request_timeout;      /* seconds for a whole request */
	long max_buffered;         /* bytes of request bodies held at once */
	char *log_level;
	char *lmtp_listen;         /* "host:port", "unix:/path" or NULL: LMTP intake off */
	char *lmtp_allow;          /* CIDRs of TCP peers that may speak LMTP */
	struct netaddr_list lmtp_allow_list;   /* parsed by config_load */
	long lmtp_max_sessions;
	char *metrics_token;       /* bearer token for /metrics, or NULL */
	char *postfix_log;         /* the local Postfix's log: checked before resending an
	                            * attempt that ended unanswered after DATA (relaylog.h) */
	char *dns_resolver;        /* doctor: address[@port] of the resolver to ask; NULL: resolv.conf */
	/* [highlevel] */
	char *api_base;
	char *status_api;          /* "auto" | "v3" | "v2": how email statuses are reported */
	char *client_id;
	char *client_secret;
	char *client_secret_file;
	char *ed25519_key;
	char *rsa_key;
	bool require_signature;
	char *app_id;              /* our marketplace appId: app webhooks must name it */
	bool oauth_require_state;  /* refuse callbacks of installs not started at /oauth/start */
	long oauth_callbacks_per_minute;
	char *delivery_token;      /* optional secret in the Delivery URL */
	long rate_limit;
	long rate_window;
	long rate_reserve;         /* percent of each window kept for conversation messages */
	long rate_share_lease;     /* ms; PostgreSQL: slots leased from the shared window at once */
	long api_timeout;
	char *api_ca_file;
	/* [store] */
	char *data_dir;
	char *store_backend;       /* sqlite | postgresql */
	char *store_dsn;           /* postgresql: libpq connection string (secret: may hold a password) */
	char *store_dsn_file;      /* ... or read from this file */
	long store_pool;           /* postgresql: connections per instance */
	long store_cache_kib;      /* sqlite: page cache of the daemon's connection */
	long store_lease;          /* seconds a silent instance keeps its claims and leases */
	long workers;
	long max_lifetime;         /* seconds a job keeps retrying */
	long retry_base;           /* first retry delay, seconds */
	long retry_max;            /* longest retry delay, seconds */
	long max_attachment;       /* bytes per fetched attachment */
	long max_attachments;      /* bytes of all of one message's attachments */
	long attachment_timeout;   /* seconds to fetch all of one message's attachments */
	char *attachment_allow_s;  /* internal CIDRs and origins attachments may come from */
	struct netaddr_list attachment_allow;
	long events_days;          /* how long `trace` history is kept */
	long keep_days;            /* finished jobs, webhook and inbound dedupe records */
	long thread_days;          /* Message-ID map that threads replies */
	long replay_days;          /* fingerprints of seen messageIds and app webhooks */
	char *token_key_file;      /* 32-byte key (or 64 hex digits): tokens sealed at rest */
	unsigned char token_key[32];
	bool have_token_key;

	/* [plugins] */
	char *plugin_dir;
	long plugin_timeout;       /* seconds a plugin's send may take */
	/* [plugin <name>]: free-form keys, read by the plugin itself */
	struct plugin_section {
		char *name;
		char **keys, **values;
		size_t n;
	} *plugin_sections;
	size_t n_plugin_sections;

	struct location_config *locations;
	size_t n_locations;
	char *key_where[CONFIG_MAX_KEYS];  /* "file:line" per key set, for messages */
};

/* Loads and validates path. Returns NULL and prints every problem
 * (file:line: message) to err. Warnings (loose permissions) also go to err
 * but do not fail. The result is freed with config_free. */
struct config *config_load(const char *path, FILE *err);

void config_free(struct config *cfg);

/* Prints the effective configuration with secrets masked. */
/* The effective configuration, as check-config prints it (secrets
 * masked); non_default: only what differs from the defaults (-n). */
void config_dump(const struct config *cfg, FILE *out, bool non_default);
/* Every key the parser knows, from its table: section, default and the
 * values allowed (check-config --keys; man: as mailbridge.conf(5)'s
 * generated key list, in troff). */
void config_keys_print(FILE *out, bool man);

/* NULL when the location is not configured. Borrowed pointer. */
const struct location_config *config_location(const struct config *cfg, const char *id);

/* A key of a [plugin <name>] section, or NULL. Borrowed. */
const char *config_plugin_value(const struct config *cfg, const char *plugin, const char *key);

/* Splits "Name <addr>" or "addr"; returns 0 or -1 when no valid address.
 * Results are malloc'd (name may be NULL). */
int config_parse_mailbox(const char *s, char **name_r, char **addr_r);

#endif
