/* ctl: the administrator's commands (check-config, queue, inbound,
 * call-log, trace, send-test, accounts), beside the daemon as smtpctl is
 * beside smtpd. Each opens the configuration and the store itself. */
#include "app.h"
#include "cli.h"
#include "calllog.h"
#include "config.h"
#include "ghl.h"
#include "http.h"
#include "inbound.h"
#include "mime_in.h"
#include "mime_out.h"
#include "jobs.h"
#include "lmtp.h"
#include "log.h"
#include "metrics.h"
#include "oauth.h"
#include "outbound.h"
#include "plugin_host.h"
#include "sig.h"
#include "store_events.h"
#include "store_inbound.h"
#include "store_instances.h"
#include "store_jobs.h"
#include "store_tokens.h"
#include "util.h"
#include "webhook.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <gmime/gmime.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


/* quiet: errors and warnings only (the unit's ExecStartPre: the journal
 * gets no copy of the configuration on every start) */
int
ctl_check_config(const struct ctl_opts *o)
{
	struct config *cfg;
	struct app app = { 0 };
	struct plugin_host *plugins;
	struct sig_keys *keys;
	char *err = NULL;
	int r = 0;

	if (o->keys) {
		/* the parser's own table; no configuration needed */
		config_keys_print(stdout, !strcmp(o->keys, "man"));
		return 0;
	}
	if (!(cfg = config_load(o->path, stderr)))
		return 1;
	app.cfg = cfg;
	/* what serve loads besides the file: the webhook keys and the plugins
	 * (opened and their ABI checked, not started) */
	if (!(keys = sig_keys_load(cfg->ed25519_key, cfg->rsa_key, &err)) ||
	    !(plugins = plugin_host_check(&app, &err))) {
		fprintf(stderr, "%s: %s\n", cfg->path, err);
		free(err);
		r = 1;
	} else {
		plugin_host_free(plugins);
	}
	sig_keys_free(keys);
	if (r == 0 && !o->quiet)
		config_dump(cfg, stdout, o->non_default);
	config_free(cfg);
	return r;
}

void
ctl_print_json(json_t *v)
{
	json_dumpf(v, stdout, JSON_INDENT(2));
	putchar('\n');
}

static void
print_inbound_row(const struct inbound_row *r, void *arg)
{
	char when[32];
	iso_time(r->created_at, when, sizeof(when));
	if (arg) {
		json_array_append_new(arg, json_pack("{s:s, s:s, s:i, s:s, s:s, s:s?, s:s?}", "locationId",
		    r->location_id, "state", inbound_state_name(r->state), "attempts", r->attempts, "received", when,
		    "key", r->key, "summary", r->summary, "error", r->error));
		return;
	}
	printf("%-20s %-8s %3d %s %s\n    %s%s%s\n", r->location_id, inbound_state_name(r->state), r->attempts, when, r->key,
	    r->summary ? r->summary : "", r->error ? "\n    error: " : "", r->error ? r->error : "");
}

static json_t *
strings_json(char **v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i] ? v[i] : ""));
	return a;
}

/* One message as inbound reads it, and what it would post: the record
 * bench/corpus.py compares with a reference parser. */
static json_t *
parse_one(const char *path)
{
	size_t len = 0;
	char *raw = read_file(path, INBOUND_MAX_MESSAGE, &len);
	const char *refused = NULL;
	struct inbound_msg *m;
	json_t *o, *atts;
	char *text;

	if (!raw)
		return json_pack("{s:s, s:s}", "file", path, "error", strerror(errno));
	m = mime_in_parse(raw, len, INBOUND_MAX_ATTACH, &refused);
	free(raw);
	if (!m)
		return json_pack("{s:s, s:s}", "file", path, "refused", refused ? refused : "unparsable");
	atts = json_array();
	for (size_t i = 0; i < m->n_attachments; i++) {
		const struct mime_attachment *a = &m->attachments[i];
		unsigned char d[32];
		char hex[65];
		gnutls_hash_fast(GNUTLS_DIG_SHA256, a->data, a->len, d);
		hex_encode(d, 32, hex);
		json_array_append_new(atts, json_pack("{s:s, s:s, s:I, s:s}", "filename", a->filename, "contentType",
		    a->content_type, "size", (json_int_t)a->len, "sha256", hex));
	}
	text = inbound_message_text(m, NULL);
	o = json_pack("{s:s, s:s?, s:s?, s:s?, s:o, s:o, s:s?, s:s?, s:s?, s:s?, s:s, s:b, s:o, s:o, s:o, s:b, s:b, "
	    "s:b, s:b, s:b, s:s?}",
	    "file", path, "subject", m->subject, "from", m->from_addr, "fromName", m->from_name,
	    "to", strings_json(m->to_addrs, m->n_to), "cc", strings_json(m->cc_addrs, m->n_cc),
	    "messageId", m->message_id, "inReplyTo", m->in_reply_to, "text", m->text, "replyText", m->reply_text,
	    "message", text, "html", m->html != NULL, "attachments", atts,
	    "dropped", strings_json(m->dropped, m->n_dropped), "notes", strings_json(m->notes, m->n_notes),
	    "autoReply", m->auto_reply, "listMail", m->list_mail, "dsn", m->is_dsn, "nullSender", m->null_sender,
	    "fromLoose", m->from_loose, "skip", m->is_dsn ? NULL : !m->from_addr ? "no From address" : NULL);
	free(text);
	mime_in_free(m);
	return o;
}

/* inbound parse FILE...: no configuration or store needed */
static int
inbound_parse(const struct ctl_opts *o)
{
	json_t *all = json_array();
	int r = 0;

	for (int i = 1; i < o->argc; i++) {
		json_t *one = parse_one(o->argv[i]);
		if (json_object_get(one, "error"))
			r = 1;
		if (o->json) {
			json_array_append_new(all, one);
			continue;
		}
		printf("%s\n  subject  %s\n  from     %s\n  message  %s\n  files    %zu\n  skip     %s\n",
		    o->argv[i], json_string_value(json_object_get(one, "subject")) ?: "-",
		    json_string_value(json_object_get(one, "from")) ?: "-",
		    json_string_value(json_object_get(one, "message")) ?: json_string_value(json_object_get(one, "refused")) ?: "-",
		    json_array_size(json_object_get(one, "attachments")),
		    json_string_value(json_object_get(one, "skip")) ?: "no");
		json_decref(one);
	}
	if (o->json)
		ctl_print_json(all);
	json_decref(all);
	return r;
}

int
ctl_inbound(const struct ctl_opts *o)
{
	struct app app;
	const char *path = o->path;
	int argc = o->argc, r = 1;
	char **argv = o->argv;

	if (argc >= 2 && !strcmp(argv[0], "parse"))
		return inbound_parse(o);
	if (argc < 1 || (strcmp(argv[0], "list") && argc < 3)) {
		fprintf(stderr, "mailbridge inbound: list [STATE], retry LOCATION KEY, or parse FILE...\n");
		main_usage(stderr);
		return 2;
	}
	if ((!strcmp(argv[0], "list") ? app_open_readonly(&app, path) : app_open(&app, path)) < 0)
		return 1;
	if (!strcmp(argv[0], "list")) {
		int state = inbound_state_parse(argc > 1 ? argv[1] : NULL);
		if (state < 0)
			fprintf(stderr, "no inbound state \"%s\" (posting, posted, skipped, dsn, failed or retry)\n",
			    argv[1]);
		else if (o->json) {
			json_t *rows = json_array();
			r = store_inbound_list(app.store, (enum inbound_state)state, print_inbound_row, rows) < 0;
			if (r == 0)
				ctl_print_json(rows);
			json_decref(rows);
		} else {
			printf("%-20s %-8s %3s %-20s %s\n    %s\n", "LOCATION", "STATE", "TRY", "RECEIVED", "KEY",
			    "FROM | SUBJECT");
			r = store_inbound_list(app.store, (enum inbound_state)state, print_inbound_row, NULL) < 0;
		}
	} else if (!strcmp(argv[0], "retry")) {
		const struct location_config *loc = config_location(app.cfg, argv[1]);
		if (!loc) {
			fprintf(stderr, "location %s is not configured\n", argv[1]);
		} else {
			app_open_highlevel(&app);
			r = inbound_retry(&app, loc, argv[2]) == INBOUND_DONE ? 0 : 1;
			printf("%s: %s\n", argv[2], r == 0 ? "processed (see inbound list)" :
			    "not retried (unknown key, or HighLevel still unavailable)");
		}
	} else {
		fprintf(stderr, "mailbridge inbound: no subcommand \"%s\" (list or retry)\n", argv[0]);
		main_usage(stderr);
		r = 2;
	}
	app_close(&app);
	return r;
}

/* A call logged from a script (a PBX hook, a CDR export). */
int
ctl_call_log(const struct ctl_opts *o)
{
	const char *path = o->path, *location = o->location, *direction = o->direction, *from = o->from;
	const char *to = o->to, *status = o->status, *recording = o->recording;
	struct app app;
	const struct location_config *loc;
	struct call_record c = { 0 };
	char *mid = NULL, *err = NULL;
	int r;

	if (!location || !direction || !from || !to || !status ||
	    (strcmp(direction, "inbound") && strcmp(direction, "outbound"))) {
		fprintf(stderr, "mailbridge call-log: needs --location, --direction inbound|outbound, --from, --to and --status\n");
		main_usage(stderr);
		return 2;
	}
	if (app_open(&app, path) < 0)
		return 1;
	loc = config_location(app.cfg, location);
	if (!loc) {
		fprintf(stderr, "location %s is not configured\n", location);
		app_close(&app);
		return 1;
	}
	app_open_highlevel(&app);
	c.inbound = !strcmp(direction, "inbound");
	c.from = from;
	c.to = to;
	c.status = status;
	c.recording_url = recording;
	r = calllog_post(&app, loc, &c, &mid, &err);
	if (r == 1)
		printf("logged %s\n", mid);
	else
		fprintf(stderr, "%s: %s\n", r == 0 ? "refused" : "try again later", err);
	free(mid);
	free(err);
	app_close(&app);
	return r == 1 ? 0 : r == 0 ? 1 : 75;   /* 75 = EX_TEMPFAIL */
}

static void
print_event(int64_t at, const char *message_id, const char *kind, const char *detail, void *arg)
{
	char when[32];
	iso_time(at, when, sizeof(when));
	if (arg) {
		char *iso = xasprintf("%.19s.%03dZ", when, (int)(at % 1000));
		json_array_append_new(arg, json_pack("{s:s, s:s?, s:s, s:s?}", "at", iso, "messageId", message_id,
		    "kind", kind, "detail", detail));
		free(iso);
		return;
	}
	/* 2026-11-29T21:09:33.123Z: the milliseconds where they belong */
	printf("%.19s.%03dZ  %-22s %-8s %s\n", when, (int)(at % 1000), message_id ? message_id : "-", kind,
	    detail ? detail : "");
}

/* The journey of a message: by HighLevel messageId, Message-ID or address. */
int
ctl_trace(const struct ctl_opts *o)
{
	struct app app;
	json_t *events = o->json ? json_array() : NULL;
	char *key;
	int n;

	if (o->argc < 1) {
		fprintf(stderr, "mailbridge trace: what to trace? a messageId, a Message-ID or an address\n");
		main_usage(stderr);
		return 2;
	}
	if (app_open_readonly(&app, o->path) < 0) {
		json_decref(events);
		return 1;
	}
	key = xstrdup(o->argv[0][0] == '<' ? o->argv[0] + 1 : o->argv[0]);
	if (*key && key[strlen(key) - 1] == '>')
		key[strlen(key) - 1] = '\0';
	n = store_events_each(app.store, key, print_event, events);
	if (n == 0)
		fprintf(stderr, "nothing recorded for %s (events are kept %ld days)\n", o->argv[0], app.cfg->events_days);
	else if (events)
		ctl_print_json(events);
	json_decref(events);
	free(key);
	app_close(&app);
	return n > 0 ? 0 : 1;
}

int
ctl_send_test(const struct ctl_opts *o)
{
	const char *path = o->path, *location = o->location, *to = o->to;
	struct app app;
	const struct location_config *loc;
	int r;

	if (!location || !to) {
		fprintf(stderr, "mailbridge send-test: needs --location ID and --to ADDRESS\n");
		main_usage(stderr);
		return 2;
	}
	app.cfg = app_load_config(path);
	if (!app.cfg)
		return 1;
	loc = config_location(app.cfg, location);
	if (!loc) {
		fprintf(stderr, "location %s is not configured in %s\n", location, path);
		config_free(app.cfg);
		return 1;
	}
	r = outbound_send_test(&app, loc, to, stdout);
	config_free(app.cfg);
	return r == 0 ? 0 : 1;
}

int
ctl_accounts(const struct ctl_opts *o)
{
	struct app app;
	json_t *rows = o->json ? json_array() : NULL;

	if (app_open_readonly(&app, o->path) < 0) {
		json_decref(rows);
		return 1;
	}
	if (!rows)
		printf("%-24s %-10s %-32s %-5s %s\n", "LOCATION", "MODE", "TOKEN", "SMTP", "IMAP WATCHER");
	for (size_t i = 0; i < app.cfg->n_locations; i++) {
		const struct location_config *loc = &app.cfg->locations[i];
		char tok[48], watch[160] = "not configured", since[32] = "";
		char *wstate = NULL, *wdetail = NULL, *holder = NULL;
		int64_t wat = 0;
		oauth_token_state(app.store, loc, tok, sizeof(tok));
		/* several instances: which one reads the mailbox (its lease) */
		if (loc->imap.host && store_is_shared(app.store)) {
			char *lease = xasprintf("mailbox:%s", loc->id);
			if (store_lease_holder(app.store, lease, &holder) == 1 && holder && !*holder) {
				free(holder);
				holder = xstrdup("(changing hands)");
			}
			free(lease);
		}
		if (loc->imap.host && store_watcher_get(app.store, loc->id, &wstate, &wdetail, &wat) == 1) {
			iso_time(wat, since, sizeof(since));
			snprintf(watch, sizeof(watch), "%s%s%s since %s%s%s", holder ? holder : "", holder ? ": " : "",
			    wstate, since, wdetail ? ": " : "", wdetail ? wdetail : "");
		} else if (loc->imap.host) {
			snprintf(watch, sizeof(watch), "not started yet");
		}
		if (rows)
			json_array_append_new(rows, json_pack("{s:s, s:s, s:s, s:b, s:s?, s:s?, s:s?, s:s?}", "locationId",
			    loc->id, "mode", loc->mode, "token", tok, "smtp", loc->smtp.host != NULL, "watcher",
			    loc->imap.host ? (wstate ? wstate : "not started yet") : NULL, "watcherSince",
			    since[0] ? since : NULL, "watcherDetail", wdetail, "watcherInstance", holder));
		else
			printf("%-24s %-10s %-32s %-5s %s\n", loc->id, loc->mode, tok, loc->smtp.host ? "yes" : "no", watch);
		free(wstate);
		free(wdetail);
		free(holder);
	}
	if (rows)
		ctl_print_json(rows);
	json_decref(rows);
	app_close(&app);
	return 0;
}


/* An online copy of the store (keys included), taken while the daemon runs. */
int
ctl_backup(const struct ctl_opts *o)
{
	struct app app;
	char *err = NULL;
	int64_t bytes = 0;
	int r;

	if (o->argc != 1) {
		fprintf(stderr, "mailbridge backup: name the file to write (mailbridge backup FILE)\n");
		return 2;
	}
	if (app_open_readonly(&app, o->path) < 0)
		return 1;
	r = store_backup(app.store, o->argv[0], &bytes, &err);
	if (r == 1)
		printf("store copied to %s (%lld bytes, mode 0600; it holds the store's keys)\n", o->argv[0],
		    (long long)bytes);
	else
		fprintf(stderr, "mailbridge backup: %s\n", err);
	free(err);
	app_close(&app);
	return r == 1 ? 0 : 1;
}
