#include "config.h"
#include "log.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <ini.h>
#include <libgen.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_MAX_INCLUDE_DEPTH 4
#ifndef MB_SERVICE_USER
#define MB_SERVICE_USER "mailbridge"   /* the unit's User= and the package's user */
#endif
#define CONFIG_MAX_FILES         50000 /* bounds include fan-out; a file per location is normal */
/* bounds the work of one load when a glob strays into big files (say
 * /var/log): room for some 30,000 locations of configuration */
#define CONFIG_MAX_BYTES         (16L * 1024 * 1024)
#define CONFIG_MAX_SECRET_FILE   4096

enum config_section { SEC_TOP, SEC_SERVER, SEC_HIGHLEVEL, SEC_STORE, SEC_PLUGINS, SEC_LOCATION, SEC_PLUGIN };
enum config_type { CT_STR, CT_PATH, CT_INT, CT_BOOL };

struct config_key {
	enum config_section section;
	const char *name;
	enum config_type type;
	size_t offset;             /* in struct config, or struct location_config */
	const char *def;           /* default as it would be written in the file */
	long min, max;             /* CT_INT bounds */
	bool secret;
	const char *choices;       /* CT_STR: the values allowed, '|' between them;
	                            * one ending in ":<...>" takes any non-empty
	                            * text after its prefix (move:<folder>) */
};

#define G(f) offsetof(struct config, f)
#define L(f) offsetof(struct location_config, f)

/* The one table of every key, its default and its limits. */
static const struct config_key config_keys[] = {
	{ SEC_SERVER, "listen", CT_STR, G(listen), "127.0.0.1:8080", 0, 0, false, NULL },
	{ SEC_SERVER, "public_url", CT_STR, G(public_url), "http://127.0.0.1:8080", 0, 0, false, NULL },
	{ SEC_SERVER, "max_body", CT_INT, G(max_body), "4194304", 1024, 1L << 30, false, NULL },
	{ SEC_SERVER, "connection_limit", CT_INT, G(conn_limit), "512", 1, 60000, false, NULL },
	{ SEC_SERVER, "connection_timeout", CT_INT, G(conn_timeout), "30", 1, 3600, false, NULL },
	{ SEC_SERVER, "imap_connect_rate", CT_INT, G(imap_connect_rate), "250", 1, 100000, false, NULL },
	{ SEC_SERVER, "imap_workers", CT_INT, G(imap_workers), "16", 1, 256, false, NULL },
	{ SEC_SERVER, "connections_per_ip", CT_INT, G(per_ip_limit), "64", 0, 60000, false, NULL },
	{ SEC_SERVER, "request_timeout", CT_INT, G(request_timeout), "60", 1, 3600, false, NULL },
	{ SEC_SERVER, "max_buffered", CT_INT, G(max_buffered), "67108864", 65536, 1L << 34, false, NULL },
	{ SEC_SERVER, "instance", CT_STR, G(instance), NULL, 0, 0, false, NULL },
	{ SEC_SERVER, "log_level", CT_STR, G(log_level), "info", 0, 0, false, "error|warn|info|debug" },
	{ SEC_SERVER, "lmtp_listen", CT_STR, G(lmtp_listen), NULL, 0, 0, false, NULL },
	{ SEC_SERVER, "lmtp_allow", CT_STR, G(lmtp_allow), "127.0.0.0/8 ::1", 0, 0, false, NULL },
	{ SEC_SERVER, "lmtp_max_sessions", CT_INT, G(lmtp_max_sessions), "32", 1, 10000, false, NULL },
	{ SEC_SERVER, "metrics_token", CT_STR, G(metrics_token), NULL, 0, 0, true, NULL },
	{ SEC_SERVER, "postfix_log", CT_STR, G(postfix_log), NULL, 0, 0, false, NULL },
	{ SEC_SERVER, "dns_resolver", CT_STR, G(dns_resolver), NULL, 0, 0, false, NULL },

	{ SEC_HIGHLEVEL, "api_base", CT_STR, G(api_base), "https://services.leadconnectorhq.com", 0, 0, false, NULL },
	{ SEC_HIGHLEVEL, "client_id", CT_STR, G(client_id), NULL, 0, 0, false, NULL },
	{ SEC_HIGHLEVEL, "client_secret", CT_STR, G(client_secret), NULL, 0, 0, true, NULL },
	{ SEC_HIGHLEVEL, "client_secret_file", CT_PATH, G(client_secret_file), NULL, 0, 0, false, NULL },
	{ SEC_HIGHLEVEL, "webhook_key_ed25519", CT_PATH, G(ed25519_key), "keys/ghl-webhook-ed25519.pem", 0, 0, false, NULL },
	{ SEC_HIGHLEVEL, "webhook_key_rsa", CT_PATH, G(rsa_key), "keys/ghl-webhook-rsa-legacy.pem", 0, 0, false, NULL },
	{ SEC_HIGHLEVEL, "require_signature", CT_BOOL, G(require_signature), "yes", 0, 0, false, NULL },
	{ SEC_HIGHLEVEL, "app_id", CT_STR, G(app_id), NULL, 0, 0, false, NULL },
	{ SEC_HIGHLEVEL, "oauth_require_state", CT_BOOL, G(oauth_require_state), "no", 0, 0, false, NULL },
	{ SEC_HIGHLEVEL, "oauth_callbacks_per_minute", CT_INT, G(oauth_callbacks_per_minute), "20", 1, 100000, false, NULL },
	{ SEC_HIGHLEVEL, "delivery_token", CT_STR, G(delivery_token), NULL, 0, 0, true, NULL },
	{ SEC_HIGHLEVEL, "rate_limit", CT_INT, G(rate_limit), "100", 1, 100000, false, NULL },
	{ SEC_HIGHLEVEL, "rate_window", CT_INT, G(rate_window), "10", 1, 3600, false, NULL },
	{ SEC_HIGHLEVEL, "rate_reserve", CT_INT, G(rate_reserve), "20", 0, 90, false, NULL },
	{ SEC_HIGHLEVEL, "rate_share_lease", CT_INT, G(rate_share_lease), "1000", 0, 60000, false, NULL },
	{ SEC_HIGHLEVEL, "timeout", CT_INT, G(api_timeout), "30", 1, 600, false, NULL },
	{ SEC_HIGHLEVEL, "status_api", CT_STR, G(status_api), "auto", 0, 0, false, "auto|v3|v2" },
	{ SEC_HIGHLEVEL, "ca_file", CT_PATH, G(api_ca_file), NULL, 0, 0, false, NULL },

	{ SEC_STORE, "data_dir", CT_PATH, G(data_dir), "data", 0, 0, false, NULL },
	{ SEC_STORE, "backend", CT_STR, G(store_backend), "sqlite", 0, 0, false, "sqlite|postgresql" },
	{ SEC_STORE, "dsn", CT_STR, G(store_dsn), NULL, 0, 0, true, NULL },
	{ SEC_STORE, "dsn_file", CT_PATH, G(store_dsn_file), NULL, 0, 0, false, NULL },
	{ SEC_STORE, "pool", CT_INT, G(store_pool), "4", 1, 64, false, NULL },
	{ SEC_STORE, "cache_kib", CT_INT, G(store_cache_kib), "512", 64, 1048576, false, NULL },
	{ SEC_STORE, "lease", CT_INT, G(store_lease), "30", 5, 3600, false, NULL },
	{ SEC_STORE, "workers", CT_INT, G(workers), "4", 1, 256, false, NULL },
	{ SEC_STORE, "max_lifetime", CT_INT, G(max_lifetime), "432000", 1, 60L * 86400, false, NULL },
	{ SEC_STORE, "retry_base", CT_INT, G(retry_base), "60", 1, 86400, false, NULL },
	{ SEC_STORE, "retry_max", CT_INT, G(retry_max), "3600", 1, 86400, false, NULL },
	{ SEC_STORE, "max_attachment", CT_INT, G(max_attachment), "26214400", 1024, 1L << 30, false, NULL },
	{ SEC_STORE, "max_attachments", CT_INT, G(max_attachments), "26214400", 1024, 1L << 30, false, NULL },
	{ SEC_STORE, "attachment_timeout", CT_INT, G(attachment_timeout), "120", 1, 3600, false, NULL },
	{ SEC_STORE, "attachment_allow", CT_STR, G(attachment_allow_s), NULL, 0, 0, false, NULL },
	{ SEC_STORE, "token_key_file", CT_PATH, G(token_key_file), NULL, 0, 0, false, NULL },
	{ SEC_STORE, "events_days", CT_INT, G(events_days), "30", 1, 3650, false, NULL },
	/* at least a week: a DSN (Postfix bounces after 5 days) must still find its job */
	{ SEC_STORE, "keep_days", CT_INT, G(keep_days), "30", 7, 3650, false, NULL },
	{ SEC_STORE, "thread_days", CT_INT, G(thread_days), "365", 1, 36500, false, NULL },
	{ SEC_STORE, "replay_days", CT_INT, G(replay_days), "400", 7, 36500, false, NULL },

	{ SEC_PLUGINS, "dir", CT_PATH, G(plugin_dir), "plugins", 0, 0, false, NULL },
	{ SEC_PLUGINS, "send_timeout", CT_INT, G(plugin_timeout), "30", 1, 3600, false, NULL },

	{ SEC_LOCATION, "mode", CT_STR, L(mode), "default", 0, 0, false, "default|custom" },
	{ SEC_LOCATION, "sms", CT_STR, L(sms_plugin), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "call", CT_STR, L(call_plugin), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "sms_provider_id", CT_STR, L(sms_provider_id), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "call_provider_id", CT_STR, L(call_provider_id), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "provider_id", CT_STR, L(provider_id), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "from", CT_STR, L(from), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "allow_from_override", CT_BOOL, L(allow_from_override), "no", 0, 0, false, NULL },
	{ SEC_LOCATION, "reply_domain", CT_STR, L(reply_domain), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "delivered_on", CT_STR, L(delivered_on_s), "relay", 0, 0, false, "relay|dsn" },
	{ SEC_LOCATION, "token", CT_STR, L(token), NULL, 0, 0, true, NULL },
	{ SEC_LOCATION, "smtp_host", CT_STR, L(smtp.host), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "smtp_port", CT_INT, L(smtp.port), "25", 1, 65535, false, NULL },
	{ SEC_LOCATION, "smtp_tls", CT_STR, L(smtp.tls), "starttls", 0, 0, false, "none|starttls|tls" },
	{ SEC_LOCATION, "smtp_tls_verify", CT_BOOL, L(smtp.tls_verify), "yes", 0, 0, false, NULL },
	{ SEC_LOCATION, "smtp_ca_file", CT_PATH, L(smtp.ca_file), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "smtp_user", CT_STR, L(smtp.user), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "smtp_password", CT_STR, L(smtp.password), NULL, 0, 0, true, NULL },
	{ SEC_LOCATION, "smtp_password_file", CT_PATH, L(smtp.password_file), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "smtp_allow_plaintext_auth", CT_BOOL, L(smtp.allow_plaintext_auth), "no", 0, 0, false, NULL },
	{ SEC_LOCATION, "imap_host", CT_STR, L(imap.host), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "imap_port", CT_INT, L(imap.port), "993", 1, 65535, false, NULL },
	{ SEC_LOCATION, "imap_tls", CT_STR, L(imap.tls), "tls", 0, 0, false, "none|starttls|tls" },
	{ SEC_LOCATION, "imap_tls_verify", CT_BOOL, L(imap.tls_verify), "yes", 0, 0, false, NULL },
	{ SEC_LOCATION, "imap_ca_file", CT_PATH, L(imap.ca_file), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "imap_user", CT_STR, L(imap.user), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "imap_password", CT_STR, L(imap.password), NULL, 0, 0, true, NULL },
	{ SEC_LOCATION, "imap_password_file", CT_PATH, L(imap.password_file), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "imap_allow_plaintext_auth", CT_BOOL, L(imap.allow_plaintext_auth), "no", 0, 0, false, NULL },
	{ SEC_LOCATION, "imap_folder", CT_STR, L(imap_folder), "INBOX", 0, 0, false, NULL },
	{ SEC_LOCATION, "imap_after", CT_STR, L(imap_after), "seen", 0, 0, false, "seen|none|move:<folder>" },
	{ SEC_LOCATION, "imap_idle", CT_BOOL, L(imap_idle), "yes", 0, 0, false, NULL },
	{ SEC_LOCATION, "imap_idle_interval", CT_INT, L(idle_interval), "300", 5, 1740, false, NULL },
	{ SEC_LOCATION, "imap_poll_interval", CT_INT, L(poll_interval), "60", 1, 86400, false, NULL },
	{ SEC_LOCATION, "auto_replies", CT_STR, L(auto_replies), "post", 0, 0, false, "post|skip" },
	{ SEC_LOCATION, "other_sender_replies", CT_STR, L(other_sender_replies), "own", 0, 0, false, "own|thread" },
	{ SEC_LOCATION, "lmtp_addresses", CT_STR, L(lmtp_addresses), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "reply_address", CT_STR, L(reply_address), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "return_path", CT_STR, L(return_path), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "unsubscribe", CT_BOOL, L(unsubscribe), "yes", 0, 0, false, NULL },
	{ SEC_LOCATION, "dnd_on_hard_bounce", CT_BOOL, L(dnd_on_hard_bounce), "no", 0, 0, false, NULL },
	{ SEC_LOCATION, "track_opens", CT_BOOL, L(track_opens), "no", 0, 0, false, NULL },
	{ SEC_LOCATION, "track_clicks", CT_BOOL, L(track_clicks), "no", 0, 0, false, NULL },
	{ SEC_LOCATION, "track_min_delay", CT_INT, L(track_min_delay), "10", 0, 86400, false, NULL },
	{ SEC_LOCATION, "dkim_selector", CT_STR, L(dkim_selector), NULL, 0, 0, false, NULL },
	{ SEC_LOCATION, "relay_ips", CT_STR, L(relay_ips), NULL, 0, 0, false, NULL },
};
#define N_KEYS (sizeof(config_keys) / sizeof(config_keys[0]))
_Static_assert(N_KEYS <= CONFIG_MAX_KEYS, "raise CONFIG_MAX_KEYS");

/* One file on the include chain; a file may not include an ancestor. */
struct include_frame {
	dev_t dev;
	ino_t ino;
	const struct include_frame *up;
};

struct parse_state {
	struct config *cfg;
	FILE *err;
	const char *file;
	char *dir;
	int line;
	int errors;
	int depth;
	int files;                 /* opened so far in this load */
	long bytes;                /* their sizes so far */
	const struct include_frame *chain;
	enum config_section section;
	struct location_config *loc;
	struct plugin_section *plugin;
	char *bad_section;         /* reported once per section */
};

static void __attribute__((format(printf, 2, 3)))
perr(struct parse_state *ps, const char *fmt, ...)
{
	va_list ap;
	fprintf(ps->err, "%s:%d: ", ps->file, ps->line);
	va_start(ap, fmt);
	vfprintf(ps->err, fmt, ap);
	va_end(ap);
	fputc('\n', ps->err);
	ps->errors++;
}

static char *
resolve_path(const char *dir, const char *value)
{
	if (value[0] == '/' || !dir)
		return xstrdup(value);
	return xasprintf("%s/%s", dir, value);
}

static int
parse_bool(const char *v, bool *out)
{
	if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "on"))
		*out = true;
	else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "off"))
		*out = false;
	else
		return -1;
	return 0;
}

/* Whether value is one of choices ("a|b|move:<folder>"). */
static bool
choice_ok(const char *choices, const char *value)
{
	const char *c = choices;
	for (;;) {
		size_t n = strcspn(c, "|");
		const char *open = memchr(c, '<', n);
		if (open && open > c && open[-1] == ':') {
			size_t prefix = (size_t)(open - c);
			if (!strncmp(value, c, prefix) && value[prefix])
				return true;
		} else if (strlen(value) == n && !strncmp(value, c, n)) {
			return true;
		}
		if (!c[n])
			return false;
		c += n + 1;
	}
}

/* "a|b|c" as "a, b or c". */
static char *
choices_text(const char *choices)
{
	char *out = xmalloc(strlen(choices) * 2 + 8), *o = out;
	const char *last = strrchr(choices, '|');
	for (const char *c = choices; *c; c++) {
		if (*c != '|')
			*o++ = *c;
		else
			o += sprintf(o, c == last ? " or " : ", ");
	}
	*o = '\0';
	return out;
}

/* Stores value into the field described by k; returns an error string or NULL. */
static const char *
config_set(const struct config_key *k, void *base, const char *dir, const char *value)
{
	void *field = (char *)base + k->offset;
	char *end;
	long v;

	switch (k->type) {
	case CT_STR:
		if (k->choices && !choice_ok(k->choices, value))
			return "not one of the allowed values";
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return NULL;
	case CT_PATH:
		free(*(char **)field);
		*(char **)field = value[0] ? resolve_path(dir, value) : NULL;
		return NULL;
	case CT_INT:
		errno = 0;
		v = strtol(value, &end, 10);
		if (errno || end == value || *end)
			return "not a number";
		if (v < k->min || v > k->max)
			return "out of range";
		*(long *)field = v;
		return NULL;
	case CT_BOOL:
		return parse_bool(value, (bool *)field) < 0 ? "not yes/no" : NULL;
	}
	return "bad key type";
}

static void
config_apply_defaults(enum config_section sec, void *base, const char *dir)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (config_keys[i].section == sec && config_keys[i].def)
			config_set(&config_keys[i], base, dir, config_keys[i].def);
}

static int config_parse_file(struct parse_state *ps, const char *path);
static void free_key_where(struct location_config *loc);
static const char *lwhere(const struct location_config *loc, const char *name);

/* include = PATH: a file that must exist, or a glob that should match
 * (a warning when it matches nothing: one typo would drop every
 * location); include_try = PATH: either may be absent (Dovecot's
 * !include_try). */
static void
config_include(struct parse_state *ps, const char *pattern, bool optional)
{
	char *full = resolve_path(ps->dir, pattern);
	glob_t g;
	int r = glob(full, 0, NULL, &g);

	if (r == GLOB_NOMATCH) {
		if (optional)
			;
		else if (!strpbrk(pattern, "*?["))
			perr(ps, "include %s: no such file (include_try for one that may be absent)", full);
		else
			fprintf(ps->err, "%s:%d: warning: include %s matches no file\n", ps->file, ps->line, full);
	} else if (r != 0) {
		perr(ps, "include %s: cannot expand", full);
	} else if (ps->depth >= CONFIG_MAX_INCLUDE_DEPTH) {
		perr(ps, "include %s: nested too deep", full);
	} else {
		/* the included file may grow these arrays: keep indexes, not pointers */
		ptrdiff_t loc_i = ps->loc ? ps->loc - ps->cfg->locations : -1;
		ptrdiff_t plugin_i = ps->plugin ? ps->plugin - ps->cfg->plugin_sections : -1;
		for (size_t i = 0; i < g.gl_pathc; i++) {
			struct parse_state sub = *ps;
			sub.depth++;
			sub.section = SEC_TOP;
			sub.loc = NULL;
			sub.plugin = NULL;
			sub.bad_section = NULL;
			config_parse_file(&sub, g.gl_pathv[i]);
			free(sub.bad_section);
			ps->cfg = sub.cfg;
			ps->errors = sub.errors;
			ps->files = sub.files;
			ps->bytes = sub.bytes;
		}
		ps->loc = loc_i >= 0 ? &ps->cfg->locations[loc_i] : NULL;
		ps->plugin = plugin_i >= 0 ? &ps->cfg->plugin_sections[plugin_i] : NULL;
	}
	if (r != GLOB_NOMATCH)
		globfree(&g);
	free(full);
}

static struct location_config *
config_add_location(struct parse_state *ps, const char *id)
{
	struct config *cfg = ps->cfg;
	struct location_config *loc;

	for (size_t i = 0; i < cfg->n_locations; i++)
		if (strcmp(cfg->locations[i].id, id) == 0) {
			perr(ps, "location %s already defined at %s", id, cfg->locations[i].file);
			return NULL;
		}
	cfg->locations = xrealloc(cfg->locations, (cfg->n_locations + 1) * sizeof(*loc));
	loc = &cfg->locations[cfg->n_locations++];
	memset(loc, 0, sizeof(*loc));
	loc->id = xstrdup(id);
	loc->file = xasprintf("%s:%d", ps->file, ps->line);
	loc->line = ps->line;
	config_apply_defaults(SEC_LOCATION, loc, ps->dir);
	return loc;
}

static bool
valid_location_id(const char *id)
{
	if (!*id || strlen(id) > 64)
		return false;
	for (; *id; id++)
		if (!isalnum((unsigned char)*id) && *id != '_' && *id != '-')
			return false;
	return true;
}

/* Enters a section when its name changes; returns false if unusable. */
static bool
config_enter_section(struct parse_state *ps, const char *section)
{
	static const char *names[] = { "", "server", "highlevel", "store", "plugins" };

	if (ps->bad_section && strcmp(ps->bad_section, section) == 0)
		return false;
	if (ps->section == SEC_LOCATION && ps->loc && strncmp(section, "location ", 9) == 0 &&
	    strcmp(ps->loc->id, section + 9) == 0)
		return true;
	if (ps->section == SEC_PLUGIN && ps->plugin && strncmp(section, "plugin ", 7) == 0 &&
	    strcmp(ps->plugin->name, section + 7) == 0)
		return true;
	for (int i = 0; i < 5; i++)
		if (strcmp(section, names[i]) == 0) {
			ps->section = (enum config_section)i;
			return true;
		}
	free(ps->bad_section);
	ps->bad_section = xstrdup(section);
	if (strncmp(section, "location ", 9) == 0) {
		const char *id = section + 9;
		while (*id == ' ')
			id++;
		if (!valid_location_id(id)) {
			perr(ps, "[%s]: location id must be 1-64 letters, digits, '-' or '_'", section);
			return false;
		}
		ps->loc = config_add_location(ps, id);
		if (!ps->loc)
			return false;
		ps->section = SEC_LOCATION;
		free(ps->bad_section);
		ps->bad_section = NULL;
		return true;
	}
	if (strncmp(section, "plugin ", 7) == 0 && valid_location_id(section + 7)) {
		struct config *cfg = ps->cfg;
		for (size_t i = 0; i < cfg->n_plugin_sections; i++)
			if (!strcmp(cfg->plugin_sections[i].name, section + 7)) {
				ps->plugin = &cfg->plugin_sections[i];
				ps->section = SEC_PLUGIN;
				free(ps->bad_section);
				ps->bad_section = NULL;
				return true;
			}
		cfg->plugin_sections = xrealloc(cfg->plugin_sections, (cfg->n_plugin_sections + 1) * sizeof(*ps->plugin));
		ps->plugin = &cfg->plugin_sections[cfg->n_plugin_sections++];
		memset(ps->plugin, 0, sizeof(*ps->plugin));
		ps->plugin->name = xstrdup(section + 7);
		ps->section = SEC_PLUGIN;
		free(ps->bad_section);
		ps->bad_section = NULL;
		return true;
	}
	perr(ps, "unknown section [%s]", section);
	return false;
}

static int
config_handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse_state *ps = user;
	const char *e;

	if (!config_enter_section(ps, section))
		return 1;
	/* include is a directive, valid anywhere; the included files start
	 * outside any section */
	if (strcmp(name, "include") == 0 || strcmp(name, "include_try") == 0) {
		config_include(ps, value, name[7] == '_');
		return 1;
	}
	if (ps->section == SEC_TOP) {
		perr(ps, "unknown key '%s' outside any section", name);
		return 1;
	}
	if (ps->section == SEC_PLUGIN) {
		/* the plugin's own keys: it validates them at init */
		struct plugin_section *p = ps->plugin;
		p->keys = xrealloc(p->keys, (p->n + 1) * sizeof(char *));
		p->values = xrealloc(p->values, (p->n + 1) * sizeof(char *));
		p->keys[p->n] = xstrdup(name);
		p->values[p->n++] = xstrdup(value);
		return 1;
	}
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct config_key *k = &config_keys[i];
		if (k->section != ps->section || strcmp(k->name, name) != 0)
			continue;
		e = config_set(k, ps->section == SEC_LOCATION ? (void *)ps->loc : (void *)ps->cfg, ps->dir, value);
		if (e && k->choices) {
			char *allowed = choices_text(k->choices);
			perr(ps, "%s must be %s (got '%s')", name, allowed, value);
			free(allowed);
		} else if (e) {
			perr(ps, "%s: %s", name, e);
		} else {
			/* where each key was set, for the checks' messages */
			char **w;
			if (ps->section == SEC_LOCATION && !ps->loc->key_where)
				ps->loc->key_where = xcalloc(N_KEYS, sizeof(char *));
			w = ps->section == SEC_LOCATION ? &ps->loc->key_where[i] : &ps->cfg->key_where[i];
			free(*w);
			*w = xasprintf("%s:%d", ps->file, ps->line);
		}
		return 1;
	}
	perr(ps, "unknown key '%s' in [%s]", name, section);
	return 1;
}

/* libinih reads a line per call: counting calls gives file:line for errors. */
struct reader_ctx {
	FILE *fp;
	struct parse_state *ps;
	bool in_value;             /* the last line set a key: an indented one continues it */
	bool partial;              /* the last read ended mid-line */
};

/* libinih skips a line it cannot parse and reports only the first such
 * line, which it returns: every one is reported here, by the rules it
 * applies (comments ; and #, [section], name = value or name: value,
 * indented continuation lines). */
/* Up to 60 bytes of a line, without its end: for quoting it in an error. */
static size_t
line_len(const char *p)
{
	size_t n = strcspn(p, "\r\n");
	return n > 60 ? 60 : n;
}

static void
config_check_line(struct reader_ctx *rc, const char *line)
{
	const char *p = line;
	bool indented;

	while (*p == ' ' || *p == '\t')
		p++;
	indented = p > line;
	if (*p == '\0' || *p == '\n' || *p == '\r' || *p == ';' || *p == '#')
		return;
	if (indented && rc->in_value)
		return;
	rc->in_value = false;
	if (*p == '[') {
		if (!strchr(p, ']'))
			perr(rc->ps, "section header without ']': %.*s", (int)line_len(p), p);
		return;
	}
	if (!strpbrk(p, "=:")) {
		perr(rc->ps, "no '=' in this line (name = value expected): %.*s", (int)line_len(p), p);
		return;
	}
	rc->in_value = true;
}

static char *
config_line_reader(char *str, int num, void *stream)
{
	struct reader_ctx *rc = stream;
	char *r = fgets(str, num, rc->fp);
	if (r) {
		if (!rc->partial) {
			rc->ps->line++;
			config_check_line(rc, str);
		}
		rc->partial = !strchr(str, '\n') && !feof(rc->fp);
	}
	return r;
}

/* The service user, looked up once per process (a configuration with
 * thousands of included files asked NSS for each). */
struct service_user {
	bool looked, exists;
	uid_t uid;
	gid_t gid;
	gid_t groups[64];
	int n_groups;
};

static const struct service_user *
service_user(void)
{
	static struct service_user su;
	const struct passwd *pw;

	if (su.looked)
		return su.exists ? &su : NULL;
	su.looked = true;
	if (!(pw = getpwnam(MB_SERVICE_USER)))
		return NULL;
	su.exists = true;
	su.uid = pw->pw_uid;
	su.gid = pw->pw_gid;
	su.n_groups = (int)(sizeof(su.groups) / sizeof(su.groups[0]));
	if (getgrouplist(pw->pw_name, pw->pw_gid, su.groups, &su.n_groups) < 0)
		su.n_groups = 0;
	return &su;
}

/* Could the service user read a file of this owner and mode? */
static bool
service_can_read(const struct service_user *su, const struct stat *st)
{
	if (su->uid == 0)
		return true;
	if (st->st_uid == su->uid)
		return (st->st_mode & S_IRUSR) != 0;
	for (int i = 0; i < su->n_groups; i++)
		if (su->groups[i] == st->st_gid)
			return (st->st_mode & S_IRGRP) != 0;
	return (st->st_mode & S_IROTH) != 0;
}

/* The Debian convention for a daemon's configuration and secrets: owned
 * root, group of the service user, mode 0640. Warns when anyone may read
 * the file, when a secret is readable by a group that is not the
 * service's, and when the service user (if it exists here) could not
 * read it: the service would then fail with "Permission denied". */
static void
warn_loose_permissions(FILE *err, const char *path, bool secret, const char *what)
{
	const struct service_user *pw = service_user();
	struct stat st;

	if (stat(path, &st) < 0)
		return;
	if ((st.st_mode & S_IROTH) ||
	    (secret && (st.st_mode & S_IRGRP) && (!pw || st.st_gid != pw->gid)))
		fprintf(err, "%s: warning: %s is readable by others (mode %04o); chown root:%s and chmod 640 it\n",
		    path, what, (unsigned)(st.st_mode & 07777), MB_SERVICE_USER);
	else if (pw && !service_can_read(pw, &st))
		fprintf(err, "%s: warning: the %s user cannot read this %s (mode %04o): chown root:%s and chmod 640 it\n",
		    path, MB_SERVICE_USER, what, (unsigned)(st.st_mode & 07777), MB_SERVICE_USER);
}

static int
config_parse_file(struct parse_state *ps, const char *path)
{
	struct reader_ctx rc = { .ps = ps };
	const char *saved_file = ps->file;
	char *saved_dir = ps->dir, *dup;
	int saved_line = ps->line;
	const struct include_frame *saved_chain = ps->chain;
	struct include_frame self;
	struct stat st;
	int fd;

	if (++ps->files > CONFIG_MAX_FILES) {
		if (ps->files == CONFIG_MAX_FILES + 1)
			perr(ps, "include %s: more than %d files in one configuration", path,
			    CONFIG_MAX_FILES);
		return -1;
	}
	/* O_NONBLOCK: a glob may match a FIFO, whose open would wait forever */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		fprintf(ps->err, "%s: cannot open: %s\n", path, strerror(errno));
		goto fail;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		fprintf(ps->err, "%s: not a regular file\n", path);
		goto fail;
	}
	if (ps->bytes > CONFIG_MAX_BYTES || st.st_size > CONFIG_MAX_BYTES - ps->bytes) {
		if (ps->bytes <= CONFIG_MAX_BYTES)      /* said once */
			perr(ps, "%s: more than %ld MiB of configuration in one load", path, CONFIG_MAX_BYTES >> 20);
		ps->bytes = CONFIG_MAX_BYTES + 1;
		close(fd);
		return -1;
	}
	ps->bytes += st.st_size;
	for (const struct include_frame *f = ps->chain; f; f = f->up)
		if (f->dev == st.st_dev && f->ino == st.st_ino) {
			perr(ps, "include %s: includes itself", path);   /* counts the error */
			close(fd);
			return -1;
		}
	if (!(rc.fp = fdopen(fd, "r"))) {
		fprintf(ps->err, "%s: cannot open: %s\n", path, strerror(errno));
		goto fail;
	}
	self = (struct include_frame){ st.st_dev, st.st_ino, ps->chain };
	ps->chain = &self;
	warn_loose_permissions(ps->err, path, false, "config file");
	dup = xstrdup(path);
	ps->file = path;
	ps->dir = xstrdup(dirname(dup));
	ps->line = 0;
	ini_parse_stream(config_line_reader, &rc, config_handler, ps);
	fclose(rc.fp);
	free(ps->dir);
	free(dup);
	ps->file = saved_file;
	ps->dir = saved_dir;
	ps->line = saved_line;
	ps->chain = saved_chain;
	return 0;

fail:
	ps->errors++;
	if (fd >= 0)
		close(fd);
	return -1;
}

int
config_parse_mailbox(const char *s, char **name_r, char **addr_r)
{
	const char *lt = strrchr(s, '<'), *gt, *at;
	const char *a, *aend;
	char *addr;

	*name_r = NULL;
	*addr_r = NULL;
	if (has_header_break(s, strlen(s)))
		return -1;
	if (lt) {
		gt = strchr(lt, '>');
		if (!gt || gt[1] != '\0')
			return -1;
		a = lt + 1;
		aend = gt;
	} else {
		a = s;
		while (*a == ' ')
			a++;
		aend = a + strlen(a);
		while (aend > a && aend[-1] == ' ')
			aend--;
	}
	if (aend - a < 3 || aend - a > 254)
		return -1;
	addr = strndup(a, (size_t)(aend - a));
	at = strchr(addr, '@');
	if (!at || at == addr || !at[1] || strchr(at + 1, '@') ||
	    strpbrk(addr, " <>()[],;:\\\"\t")) {
		free(addr);
		return -1;
	}
	if (lt) {
		const char *n = s, *nend = lt;
		while (*n == ' ')
			n++;
		while (nend > n && nend[-1] == ' ')
			nend--;
		if (nend - n >= 2 && *n == '"' && nend[-1] == '"') {
			n++;
			nend--;
		}
		if (nend > n)
			*name_r = strndup(n, (size_t)(nend - n));
	}
	*addr_r = addr;
	return 0;
}

static int
parse_tls_mode(const char *s, enum tls_mode *out)
{
	if (!strcmp(s, "none"))
		*out = TLS_MODE_NONE;
	else if (!strcmp(s, "starttls"))
		*out = TLS_MODE_STARTTLS;
	else if (!strcmp(s, "tls"))
		*out = TLS_MODE_IMPLICIT;
	else
		return -1;
	return 0;
}

/* Reads a one-line secret file (trailing newline stripped). */
static char *
read_secret(const char *path, FILE *err, const char *where, int *errors)
{
	size_t len;
	char *s = read_file(path, CONFIG_MAX_SECRET_FILE, &len);

	if (!s) {
		fprintf(err, "%s: cannot read secret file %s: %s\n", where, path, strerror(errno));
		(*errors)++;
		return NULL;
	}
	warn_loose_permissions(err, path, true, "secret file");
	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		s[--len] = '\0';
	return s;
}

static void
check_server(const struct location_config *loc, const char *what, struct mail_server_config *m, FILE *err,
    int *errors)
{
	char key[32];
#define KEY(suffix) (snprintf(key, sizeof(key), "%s_%s", what, suffix), lwhere(loc, key))
	bool unreadable = false;

	(void)parse_tls_mode(m->tls, &m->tls_mode);   /* the value was checked against its choices */
	if (m->password && m->password_file) {
		fprintf(err, "%s: set %s_password or %s_password_file, not both\n", KEY("password_file"), what, what);
		(*errors)++;
	} else if (m->password_file) {
		m->password = read_secret(m->password_file, err, KEY("password_file"), errors);
		unreadable = m->password == NULL;
	}
	/* an unreadable password file was reported: not again as "no password" */
	if (m->user && !m->password && !unreadable) {
		fprintf(err, "%s: %s_user is set but no %s_password\n", KEY("user"), what, what);
		(*errors)++;
	}
	if (m->ca_file && access(m->ca_file, R_OK) != 0) {
		fprintf(err, "%s: %s_ca_file %s: %s\n", KEY("ca_file"), what, m->ca_file, strerror(errno));
		(*errors)++;
	}
	if (m->user && m->tls_mode == TLS_MODE_NONE && m->host && !netaddr_text_is_loopback(m->host) &&
	    !m->allow_plaintext_auth) {
		fprintf(err, "%s: %s_user with %s_tls = none would send the password in clear text to %s: use "
		    "starttls or tls, or set %s_allow_plaintext_auth = yes if the path is trusted\n", KEY("tls"), what,
		    what, m->host, what);
		(*errors)++;
	}
#undef KEY
}

/* "local@domain" into box (local without a '+'); -1 when it is not one. */
static int
plus_box_set(struct plus_box *box, const char *addr, const char *tag)
{
	const char *at = addr ? strrchr(addr, '@') : NULL;
	if (!at || at == addr || !at[1] || memchr(addr, '+', (size_t)(at - addr)) || strpbrk(addr, " \t<>\"(),;:\\") ||
	    strchr(at + 1, '@') != NULL || has_header_break(addr, strlen(addr)))
		return -1;
	box->local = xasprintf("%.*s", (int)(at - addr), addr);
	box->domain = xstrdup(at + 1);
	box->tag = tag;
	return 0;
}

/* Where replies and DSNs go. A mailbox address takes plus tokens with no
 * alias on Gmail, Microsoft 365, Fastmail or Dovecot, and two locations
 * can share a domain: reply_address; else the watched mailbox (imap_user
 * when it is an address, else from when a mailbox is watched); else from,
 * unless reply_domain is set: a location without a watched mailbox and
 * with its own reply domain takes replies over LMTP (or an alias), at
 * the older reply+/bounce+ addresses there. */
static void
config_plus_boxes(struct location_config *loc, FILE *err, int *errors)
{
	const char *ra = loc->reply_address;
	if (!ra && loc->imap.user && strchr(loc->imap.user, '@'))
		ra = loc->imap.user;
	bool mailbox = loc->imap.host || !(loc->key_where && lwhere(loc, "reply_domain") != loc->file);
	if (!ra && mailbox)
		ra = loc->from_addr;
	if (!ra && mailbox)
		return;            /* no valid from: said already */
	if (!ra) {
		char *r = xasprintf("reply@%s", loc->reply_domain ? loc->reply_domain : "invalid");
		char *b = xasprintf("bounce@%s", loc->reply_domain ? loc->reply_domain : "invalid");
		plus_box_set(&loc->reply_box, r, "");
		plus_box_set(&loc->return_box, b, "");
		free(r);
		free(b);
		return;
	}
	if (plus_box_set(&loc->reply_box, ra, "") < 0) {
		fprintf(err, "%s: reply_address must be a plain address without '+' (got '%s')\n",
		    lwhere(loc, loc->reply_address ? "reply_address" : "imap_user"), ra);
		(*errors)++;
	}
	if (plus_box_set(&loc->return_box, loc->return_path ? loc->return_path : ra, "b") < 0 && loc->return_path) {
		fprintf(err, "%s: return_path must be a plain address without '+' (got '%s')\n", lwhere(loc, "return_path"),
		    loc->return_path);
		(*errors)++;
	}
}

/* Each message names the line of the key at fault (the section's first
 * line for a key that is missing). Enumerated values were checked as
 * they were read, against the key's choices. */
/* Tracking links go to public_url: a loopback one (the default) reaches
 * no recipient, and plain http shows as "not secure" in mail clients. */
static void
warn_tracking_unreachable(const struct config *cfg, const struct location_config *loc, FILE *err)
{
	const char *u = cfg->public_url, *h = strstr(u, "://");
	char host[256];
	size_t n;

	if ((!loc->track_opens && !loc->track_clicks) || !h)
		return;
	h += 3;
	if (*h == '[')
		n = strcspn(++h, "]");
	else
		n = strcspn(h, ":/");
	snprintf(host, sizeof(host), "%.*s", (int)(n < sizeof(host) ? n : sizeof(host) - 1), h);
	if (netaddr_text_is_loopback(host) || !strcasecmp(host, "localhost"))
		fprintf(err, "%s: warning: tracking links go to public_url %s, which no recipient can reach\n",
		    lwhere(loc, loc->track_opens ? "track_opens" : "track_clicks"), u);
	else if (strncmp(u, "https://", 8))
		fprintf(err, "%s: warning: tracking links go to public_url %s: use https (mail clients flag http "
		    "links)\n", lwhere(loc, loc->track_opens ? "track_opens" : "track_clicks"), u);
}

static void
config_check_location(struct location_config *loc, FILE *err, int *errors)
{
	const char *w = loc->file;

	loc->provider_mode = strcmp(loc->mode, "custom") ? PROVIDER_DEFAULT : PROVIDER_CUSTOM;
	loc->delivered_on = strcmp(loc->delivered_on_s, "dsn") ? DELIVERED_ON_RELAY : DELIVERED_ON_DSN;
	if (loc->provider_mode == PROVIDER_CUSTOM && !loc->provider_id) {
		fprintf(err, "%s: mode = custom needs provider_id (the conversationProviderId)\n", lwhere(loc, "mode"));
		(*errors)++;
	}
	if (!loc->from) {
		fprintf(err, "%s: from is required (the sender identity, \"Name <addr@domain>\")\n", w);
		(*errors)++;
	} else if (config_parse_mailbox(loc->from, &loc->from_name, &loc->from_addr) < 0) {
		fprintf(err, "%s: from: not a valid mailbox: '%s'\n", lwhere(loc, "from"), loc->from);
		(*errors)++;
	}
	if (!loc->reply_domain && loc->from_addr)
		loc->reply_domain = xstrdup(strchr(loc->from_addr, '@') + 1);
	if (loc->reply_domain && (has_header_break(loc->reply_domain, strlen(loc->reply_domain)) ||
	    strpbrk(loc->reply_domain, " <>@"))) {
		fprintf(err, "%s: reply_domain: not a domain: '%s'\n", lwhere(loc, "reply_domain"), loc->reply_domain);
		(*errors)++;
	}
	if (!loc->smtp.host) {
		fprintf(err, "%s: smtp_host is required\n", w);
		(*errors)++;
	}
	config_plus_boxes(loc, err, errors);
	check_server(loc, "smtp", &loc->smtp, err, errors);
	check_server(loc, "imap", &loc->imap, err, errors);
	if (loc->imap.host && !loc->imap.user) {
		fprintf(err, "%s: imap_host is set but no imap_user\n", lwhere(loc, "imap_host"));
		(*errors)++;
	}
}

/* "file:line" where a global key was set, else the main file. */
static const char *
where(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < N_KEYS && i < CONFIG_MAX_KEYS; i++)
		if (config_keys[i].section != SEC_LOCATION && strcmp(config_keys[i].name, name) == 0)
			return cfg->key_where[i] ? cfg->key_where[i] : cfg->path;
	return cfg->path;
}

/* "file:line" where a location's key was set, else where its section starts. */
static const char *
lwhere(const struct location_config *loc, const char *name)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (config_keys[i].section == SEC_LOCATION && strcmp(config_keys[i].name, name) == 0)
			return loc->key_where && loc->key_where[i] ? loc->key_where[i] : loc->file;
	return loc->file;
}

/* The name of the n-th plugin a location uses (sms, then call), or NULL. */
static const char *
location_plugin(const struct config *cfg, size_t n)
{
	const struct location_config *loc = &cfg->locations[n / 2];
	return n % 2 ? loc->call_plugin : loc->sms_plugin;
}

/* Once per plugin in use: without a secret, its routes answer 403. */
static void
warn_plugins_without_secret(const struct config *cfg, FILE *err)
{
	for (size_t i = 0; i < cfg->n_locations * 2; i++) {
		const char *name = location_plugin(cfg, i);
		bool seen = false;
		for (size_t j = 0; name && j < i && !seen; j++)
			seen = location_plugin(cfg, j) && !strcmp(location_plugin(cfg, j), name);
		if (name && !seen && !config_plugin_value(cfg, name, "secret"))
			fprintf(err, "%s: warning: [plugin %s] has no secret: its HTTP routes (delivery reports, "
			    "inbound messages) answer 403 until it has one\n", cfg->path, name);
	}
}

/* True when the file set a global key (it is not at its default). */
static bool
key_was_set(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < N_KEYS && i < CONFIG_MAX_KEYS; i++)
		if (config_keys[i].section != SEC_LOCATION && strcmp(config_keys[i].name, name) == 0)
			return cfg->key_where[i] != NULL;
	return false;
}

static void
check_key_file(struct config *cfg, const char *name, char **path, FILE *err, int *errors)
{
	if (!*path || access(*path, R_OK) == 0)
		return;
	if (key_was_set(cfg, name)) {
		fprintf(err, "%s: %s %s: %s (set it empty to use no such key)\n", where(cfg, name), name, *path,
		    strerror(errno));
		(*errors)++;
	} else {
		fprintf(err, "%s: warning: %s: the default %s is missing: %s\n", cfg->path, name, *path, strerror(errno));
		free(*path);
		*path = NULL;
	}
}

static void
config_check(struct config *cfg, FILE *err, int *errors)
{
	struct sockaddr_storage ss;
	char *e = NULL;
	int port;

	/* what serve would refuse, refused here too (check-config runs this) */
	if (netaddr_parse_hostport(cfg->listen, &ss, &port, &e) < 0) {
		fprintf(err, "%s: listen %s\n", where(cfg, "listen"), e);
		free(e);
		(*errors)++;
	} else {
		const char *colon = strrchr(cfg->listen, ':');
		cfg->listen_host = xasprintf("%.*s", (int)(colon - cfg->listen), cfg->listen);
		cfg->listen_port = port;
	}
	if (cfg->lmtp_listen && strncmp(cfg->lmtp_listen, "unix:", 5) &&
	    netaddr_parse_hostport(cfg->lmtp_listen, &ss, NULL, &e) < 0) {
		fprintf(err, "%s: lmtp_listen (host:port or unix:/path) %s\n", where(cfg, "lmtp_listen"), e);
		free(e);
		(*errors)++;
	}
	if (!netaddr_url_is_http(cfg->public_url)) {
		fprintf(err, "%s: public_url must be the http(s) URL HighLevel reaches this server at (got '%s')\n",
		    where(cfg, "public_url"), cfg->public_url);
		(*errors)++;
	}
	if (strncmp(cfg->api_base, "http://", 7) && strncmp(cfg->api_base, "https://", 8)) {
		fprintf(err, "%s: api_base must be an http(s) URL\n", where(cfg, "api_base"));
		(*errors)++;
	}
	if (cfg->client_secret && cfg->client_secret_file) {
		fprintf(err, "%s: set client_secret or client_secret_file, not both\n", where(cfg, "client_secret_file"));
		(*errors)++;
	} else if (cfg->client_secret_file) {
		cfg->client_secret = read_secret(cfg->client_secret_file, err, where(cfg, "client_secret_file"), errors);
	}
	/* a key that is named must be there: a typo must not quietly leave
	 * only the other key (or none) checking signatures. A default path
	 * that is missing only warns; an empty value turns a key off. */
	check_key_file(cfg, "webhook_key_ed25519", &cfg->ed25519_key, err, errors);
	check_key_file(cfg, "webhook_key_rsa", &cfg->rsa_key, err, errors);
	if (cfg->require_signature && !cfg->ed25519_key && !cfg->rsa_key) {
		fprintf(err, "%s: require_signature is on but no webhook key is set\n", where(cfg, "require_signature"));
		(*errors)++;
	}
	if (netaddr_list_parse(cfg->attachment_allow_s, &cfg->attachment_allow, &e) < 0) {
		fprintf(err, "%s: attachment_allow: %s\n", where(cfg, "attachment_allow"), e);
		free(e);
		(*errors)++;
	}
	if (cfg->max_attachment > cfg->max_attachments) {
		fprintf(err, "%s: max_attachment is larger than max_attachments (the whole message's)\n",
		    where(cfg, "max_attachment"));
		(*errors)++;
	}
	/* a label value in /metrics and a name in the store: plain characters */
	if (cfg->instance && (!*cfg->instance || strspn(cfg->instance, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789._:-") != strlen(cfg->instance) || strlen(cfg->instance) > 128)) {
		fprintf(err, "%s: instance: letters, digits and . _ : - only (at most 128)\n", where(cfg, "instance"));
		(*errors)++;
	}
	if (cfg->store_dsn_file) {
		if (cfg->store_dsn) {
			fprintf(err, "%s: dsn and dsn_file: set one\n", where(cfg, "dsn_file"));
			(*errors)++;
		} else {
			cfg->store_dsn = read_secret(cfg->store_dsn_file, err, where(cfg, "dsn_file"), errors);
		}
	}
	if (strcmp(cfg->store_backend, "postgresql") == 0 && !cfg->store_dsn && !cfg->store_dsn_file) {
		fprintf(err, "%s: backend = postgresql needs dsn or dsn_file (e.g. postgresql://mailbridge@db1/mailbridge)\n",
		    where(cfg, "backend"));
		(*errors)++;
	}
	if (cfg->token_key_file) {
		size_t len;
		char *k = read_secret(cfg->token_key_file, err, where(cfg, "token_key_file"), errors);
		len = k ? strlen(k) : 0;
		if (k && len == 64 && strspn(k, "0123456789abcdefABCDEF") == 64) {
			for (int i = 0; i < 32; i++) {
				unsigned v;
				sscanf(k + 2 * i, "%2x", &v);
				cfg->token_key[i] = (unsigned char)v;
			}
			cfg->have_token_key = true;
		} else if (k) {
			fprintf(err, "%s: token_key_file must hold 64 hex digits (e.g. from: openssl rand -hex 32)\n",
			    where(cfg, "token_key_file"));
			(*errors)++;
		}
		if (k)
			memset(k, 0, len);
		free(k);
	}
	if (netaddr_list_parse(cfg->lmtp_allow, &cfg->lmtp_allow_list, &e) < 0) {
		fprintf(err, "%s: lmtp_allow: %s\n", where(cfg, "lmtp_allow"), e);
		free(e);
		(*errors)++;
	}
	if (cfg->max_buffered < cfg->max_body) {
		fprintf(err, "%s: max_buffered is smaller than max_body: no webhook that large could be taken\n",
		    where(cfg, "max_buffered"));
		(*errors)++;
	}
	if (cfg->replay_days < cfg->keep_days) {
		fprintf(err, "%s: replay_days is shorter than keep_days: a replayed webhook could be sent again\n",
		    where(cfg, "replay_days"));
		(*errors)++;
	}
	warn_plugins_without_secret(cfg, err);
	if (cfg->client_id && !cfg->app_id)
		fprintf(err, "%s: warning: client_id is set but app_id is not: INSTALL and UNINSTALL webhooks are "
		    "refused until [highlevel] app_id names this app\n", where(cfg, "client_id"));
	if (cfg->retry_base > cfg->retry_max) {
		fprintf(err, "%s: retry_base is larger than retry_max\n", where(cfg, "retry_base"));
		(*errors)++;
	}
	for (size_t i = 0; i < cfg->n_locations; i++) {
		config_check_location(&cfg->locations[i], err, errors);
		warn_tracking_unreachable(cfg, &cfg->locations[i], err);
	}
}

struct config *
config_load(const char *path, FILE *err)
{
	struct parse_state ps = { 0 };
	char *dup = xstrdup(path);
	struct config *cfg = xcalloc(1, sizeof(*cfg));

	cfg->path = xstrdup(path);
	cfg->dir = xstrdup(dirname(dup));
	free(dup);
	config_apply_defaults(SEC_SERVER, cfg, cfg->dir);
	config_apply_defaults(SEC_HIGHLEVEL, cfg, cfg->dir);
	config_apply_defaults(SEC_STORE, cfg, cfg->dir);
	config_apply_defaults(SEC_PLUGINS, cfg, cfg->dir);

	ps.cfg = cfg;
	ps.err = err;
	config_parse_file(&ps, path);
	free(ps.bad_section);
	/* semantic checks run even after syntax errors: one run, every error */
	config_check(cfg, err, &ps.errors);
	for (size_t i = 0; i < cfg->n_locations; i++)
		free_key_where(&cfg->locations[i]);
	if (ps.errors) {
		fprintf(err, "%s: %d error%s\n", path, ps.errors, ps.errors == 1 ? "" : "s");
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

static void
free_key_where(struct location_config *loc)
{
	for (size_t i = 0; loc->key_where && i < N_KEYS; i++)
		free(loc->key_where[i]);
	free(loc->key_where);
	loc->key_where = NULL;
}

static void
free_fields(enum config_section sec, void *base)
{
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct config_key *k = &config_keys[i];
		if (k->section == sec && (k->type == CT_STR || k->type == CT_PATH)) {
			free(*(char **)((char *)base + k->offset));
			*(char **)((char *)base + k->offset) = NULL;
		}
	}
}

void
config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n_locations; i++) {
		struct location_config *loc = &cfg->locations[i];
		free_fields(SEC_LOCATION, loc);
		free(loc->id);
		free(loc->file);
		free(loc->from_name);
		free(loc->from_addr);
		free(loc->reply_box.local);
		free(loc->reply_box.domain);
		free(loc->return_box.local);
		free(loc->return_box.domain);
	}
	free(cfg->locations);
	free_fields(SEC_SERVER, cfg);
	free_fields(SEC_HIGHLEVEL, cfg);
	free_fields(SEC_STORE, cfg);
	free_fields(SEC_PLUGINS, cfg);
	for (size_t i = 0; i < cfg->n_plugin_sections; i++) {
		struct plugin_section *p = &cfg->plugin_sections[i];
		for (size_t k = 0; k < p->n; k++) {
			free(p->keys[k]);
			free(p->values[k]);
		}
		free(p->keys);
		free(p->values);
		free(p->name);
	}
	free(cfg->plugin_sections);
	for (size_t i = 0; i < CONFIG_MAX_KEYS; i++)
		free(cfg->key_where[i]);
	netaddr_list_clear(&cfg->attachment_allow);
	netaddr_list_clear(&cfg->lmtp_allow_list);
	free(cfg->listen_host);
	free(cfg->path);
	free(cfg->dir);
	free(cfg);
}

/* A URL with its userinfo and query values masked (user:pw@ becomes
 * ****@, ?a=1 becomes ?a=****); anything else as it is. malloc'd. */
static char *
mask_url(const char *v)
{
	const char *scheme = strstr(v, "://");
	char *out, *o;

	if (!scheme)
		return xstrdup(v);
	out = o = xmalloc(strlen(v) * 2 + 8);
	{
		const char *host = scheme + 3, *end = host + strcspn(host, "/?#"), *at = NULL;
		for (const char *p = host; p < end; p++)
			if (*p == '@')
				at = p;
		memcpy(o, v, (size_t)(host - v));
		o += host - v;
		if (at) {
			o += sprintf(o, "****@");
			host = at + 1;
		}
		v = host;
	}
	for (bool in_query = false, in_value = false; *v; v++) {
		if (*v == '#' ) {
			in_query = in_value = false;
		} else if (*v == '?' && !in_query) {
			in_query = true;
		} else if (in_query && *v == '&') {
			in_value = false;
		} else if (in_query && *v == '=' && !in_value) {
			in_value = true;
			*o++ = '=';
			o += sprintf(o, "****");
			continue;
		} else if (in_value) {
			continue;
		}
		*o++ = *v;
	}
	*o = '\0';
	return out;
}

/* A key's value as check-config shows it: secrets masked, URLs without
 * their userinfo and query values. */
static char *
render_value(const char *v, bool secret)
{
	return secret ? xstrdup(v ? "********" : "") : mask_url(v ? v : "");
}

/* A plugin's keys are opaque to us: those whose names say secret are
 * masked whole, and every URL loses its userinfo and query values (a
 * sendsms_url may carry a password there). */
static bool
plugin_key_secret(const char *key)
{
	static const char *const words[] = { "pass", "secret", "token", "key", "auth", "credential", NULL };
	for (const char *const *w = words; *w; w++)
		if (strstr(key, *w))
			return true;
	return false;
}

static char *
render_key(const struct config_key *k, const void *base)
{
	const void *f = (const char *)base + k->offset;
	switch (k->type) {
	case CT_STR:
	case CT_PATH:
		/* a secret read from a *_file shows as set too */
		return render_value(*(char *const *)f, k->secret);
	case CT_INT:
		return xasprintf("%ld", *(const long *)f);
	case CT_BOOL:
		return xstrdup(*(const bool *)f ? "yes" : "no");
	}
	return xstrdup("");
}

/* The section's keys; with defaults (check-config -n) only those whose
 * value differs from it, and the header (unless NULL) only when there
 * is one. */
static void
dump_section(FILE *out, const char *header, enum config_section sec, const void *base, const void *defaults)
{
	bool headed = header == NULL;   /* NULL: printed already */
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct config_key *k = &config_keys[i];
		char *v, *d;
		if (k->section != sec)
			continue;
		v = render_key(k, base);
		d = defaults ? render_key(k, defaults) : NULL;
		if (!d || strcmp(v, d)) {
			if (!headed)
				fprintf(out, "%s\n", header);
			headed = true;
			fprintf(out, "%s = %s\n", k->name, v);
		}
		free(v);
		free(d);
	}
}

void
config_dump(const struct config *cfg, FILE *out, bool non_default)
{
	static const struct { enum config_section sec; const char *header; } globals[] = {
		{ SEC_SERVER, "[server]" }, { SEC_HIGHLEVEL, "\n[highlevel]" }, { SEC_STORE, "\n[store]" },
		{ SEC_PLUGINS, "\n[plugins]" },
	};
	struct config *dg = NULL;
	struct location_config *dl = NULL;

	if (non_default) {
		dg = xcalloc(1, sizeof(*dg));
		dl = xcalloc(1, sizeof(*dl));
		for (size_t i = 0; i < sizeof(globals) / sizeof(globals[0]); i++)
			config_apply_defaults(globals[i].sec, dg, cfg->dir);
		config_apply_defaults(SEC_LOCATION, dl, cfg->dir);
	}
	for (size_t i = 0; i < sizeof(globals) / sizeof(globals[0]); i++)
		dump_section(out, globals[i].header, globals[i].sec, cfg, dg);
	for (size_t i = 0; i < cfg->n_plugin_sections; i++) {
		const struct plugin_section *p = &cfg->plugin_sections[i];
		fprintf(out, "\n[plugin %s]\n", p->name);
		for (size_t k = 0; k < p->n; k++) {
			char *v = render_value(p->values[k], plugin_key_secret(p->keys[k]));
			fprintf(out, "%s = %s\n", p->keys[k], v);
			free(v);
		}
	}
	for (size_t i = 0; i < cfg->n_locations; i++) {
		/* every location is named, even one with only defaults */
		fprintf(out, "\n[location %s]\n", cfg->locations[i].id);
		dump_section(out, NULL, SEC_LOCATION, &cfg->locations[i], dl);
	}
	if (dg) {
		for (size_t i = 0; i < sizeof(globals) / sizeof(globals[0]); i++)
			free_fields(globals[i].sec, dg);
		free_fields(SEC_LOCATION, dl);
		free(dg);
		free(dl);
	}
}

void
config_keys_print(FILE *out, bool man)
{
	static const char *const sections[] = { [SEC_SERVER] = "server", [SEC_HIGHLEVEL] = "highlevel",
	    [SEC_STORE] = "store", [SEC_PLUGINS] = "plugins", [SEC_LOCATION] = "location" };
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct config_key *k = &config_keys[i];
		const char *sec = sections[k->section];
		char *allowed;
		if (k->choices)
			allowed = choices_text(k->choices);
		else if (k->type == CT_INT)
			allowed = xasprintf("%ld to %ld", k->min, k->max);
		else if (k->type == CT_BOOL)
			allowed = xstrdup("yes or no");
		else if (k->type == CT_PATH)
			allowed = xstrdup("a path (relative to the file naming it)");
		else
			allowed = xstrdup("text");
		if (man)
			fprintf(out, ".TP\n.BR %s \" [%s]\"\n%s%s%s; %s%s\n", k->name, sec, k->def ? "default \\fB" : "no default",
			    k->def ? k->def : "", k->def ? "\\fR" : "", allowed, k->secret ? "; a secret (masked)" : "");
		else
			fprintf(out, "[%s] %s = %s\t(%s%s)\n", sec, k->name, k->def ? k->def : "", allowed,
			    k->secret ? "; secret" : "");
		free(allowed);
	}
}

const char *
config_plugin_value(const struct config *cfg, const char *plugin, const char *key)
{
	for (size_t i = 0; i < cfg->n_plugin_sections; i++)
		if (!strcmp(cfg->plugin_sections[i].name, plugin))
			for (size_t k = 0; k < cfg->plugin_sections[i].n; k++)
				if (!strcmp(cfg->plugin_sections[i].keys[k], key))
					return cfg->plugin_sections[i].values[k];
	return NULL;
}

const struct location_config *
config_location(const struct config *cfg, const char *id)
{
	for (size_t i = 0; i < cfg->n_locations; i++)
		if (strcmp(cfg->locations[i].id, id) == 0)
			return &cfg->locations[i];
	return NULL;
}
