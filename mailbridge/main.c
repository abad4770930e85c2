/* mailbridge: command line. serve (the daemon), check-config, queue,
 * send-test, accounts. Process-wide library init happens here, before
 * any thread starts (LIBRARIES.md B.6). */
#include "app.h"
#include "calllog.h"
#include "config.h"
#include "ghl.h"
#include "http.h"
#include "imap_watch.h"
#include "inbound.h"
#include "lmtp.h"
#include "log.h"
#include "metrics.h"
#include "oauth.h"
#include "outbound.h"
#include "plugin_host.h"
#include "sig.h"
#include "store.h"
#include "util.h"
#include "webhook.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <gmime/gmime.h>
#include <gnutls/gnutls.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONFIG "/etc/mailbridge/mailbridge.conf"
#define REPORTER_THREADS 2
#define HOUSEKEEPING_S 3600      /* store retention pass */

static char **saved_argv;        /* for the re-exec of a SIGHUP reload */
static char self_exe[4096];      /* our binary's path, read at start */
#define IMAP_WORKERS 4

static const struct http_route routes[] = {
	/* the Delivery URL alone takes [server] max_body; the others 64 KiB */
	{ "POST", "/webhooks/provider", webhook_provider, true, webhook_provider_precheck },
	{ "POST", "/webhooks/provider/*", webhook_provider, true, webhook_provider_precheck },   /* delivery_token */
	{ "POST", "/webhooks/app", webhook_app, false, webhook_app_precheck },
	{ "GET", "/oauth/start", oauth_http_start, false, NULL },
	{ "GET", "/oauth/callback", oauth_http_callback, false, NULL },
	{ "GET", "/healthz", webhook_health, false, NULL },
	{ "GET", "/metrics", metrics_http, false, NULL },
	{ "*", "/plugins/*", plugin_http, false, NULL },
};
#define HTTP_SMALL_BODY 65536

static void
usage(FILE *out)
{
	fprintf(out,
	    "usage: mailbridge [serve] [-c FILE]\n"
	    "       mailbridge check-config [-q] [-c FILE]\n"
	    "       mailbridge queue list|show ID|retry ID|drop ID [-c FILE]\n"
	    "       mailbridge send-test --location ID --to ADDR [-c FILE]\n"
	    "       mailbridge inbound list [STATE] | retry LOCATION KEY [-c FILE]\n"
	    "       mailbridge accounts [-c FILE]\n"
	    "       mailbridge trace MESSAGEID|MESSAGE-ID|ADDRESS [-c FILE]\n"
	    "       mailbridge call-log --location ID --direction inbound|outbound --from E164 --to E164\n"
	    "                 --status completed|answered|busy|no-answer|failed|canceled|voicemail|pending\n"
	    "                 [--recording URL] [-c FILE]\n"
	    "FILE defaults to " DEFAULT_CONFIG ", else conf/mailbridge.conf\n");
}

static void
lib_init(void)
{
	signal(SIGPIPE, SIG_IGN);     /* libetpan writes with send() and no MSG_NOSIGNAL */
	curl_global_init(CURL_GLOBAL_DEFAULT);
	gnutls_global_init();
	g_mime_init();
}

static void
lib_deinit(void)
{
	g_mime_shutdown();
	gnutls_global_deinit();
	curl_global_cleanup();
}

/* Opens config + store for a command; NULL on failure (printed). */
static struct config *
load_config(const char *path)
{
	struct config *cfg = config_load(path, stderr);
	enum log_level lvl;
	if (cfg && log_level_from_name(cfg->log_level, &lvl) == 0)
		log_set_level(lvl);
	return cfg;
}

static int
open_app(struct app *app, const char *path)
{
	char *err = NULL;
	memset(app, 0, sizeof(*app));
	app->cfg = load_config(path);
	if (!app->cfg)
		return -1;
	app->store = store_open(app->cfg->data_dir, &err);
	if (!app->store) {
		fprintf(stderr, "mailbridge: %s\n", err);
		free(err);
		config_free(app->cfg);
		return -1;
	}
	if (app->cfg->have_token_key)
		store_set_token_key(app->store, app->cfg->token_key);
	if (store_secret(app->store, "address-token", app->address_key) != 1) {
		fprintf(stderr, "mailbridge: cannot read or create the store's address key\n");
		store_close(app->store);
		config_free(app->cfg);
		return -1;
	}
	return 0;
}

static void
close_app(struct app *app)
{
	plugin_host_free(app->plugins);
	oauth_free(app->oauth);
	ghl_free(app->ghl);
	sig_keys_free(app->keys);
	store_close(app->store);
	config_free(app->cfg);
}

/* Forgets finished work older than the configured windows ([store]
 * keep_days, thread_days, events_days). */
static void
housekeeping(struct app *app)
{
	const int64_t day = 86400000LL, now = now_ms();
	struct store_pruned p;

	if (store_prune(app->store, now - app->cfg->keep_days * day, now - app->cfg->thread_days * day,
	    now - app->cfg->events_days * day, now - app->cfg->replay_days * day, &p) < 0)
		return;             /* the store logged why; next hour tries again */
	if (p.payloads || p.jobs || p.webhooks || p.inbound || p.threads || p.events || p.replays)
		log_info("store: pruned payloads=%lld jobs=%lld webhooks=%lld inbound=%lld threads=%lld events=%lld "
		    "replay_guard=%lld", (long long)p.payloads, (long long)p.jobs, (long long)p.webhooks,
		    (long long)p.inbound, (long long)p.threads, (long long)p.events, (long long)p.replays);
}

static int
cmd_serve(const char *path)
{
	struct app app;
	struct http_server *srv;
	struct lmtp_server *lmtp = NULL;
	struct http_limits lim;
	sigset_t set;
	char *err = NULL;
	int sig, recovered, inherited_fd = -1, listen_fd = -1;

	if (open_app(&app, path) < 0)
		return 1;
	app.keys = sig_keys_load(app.cfg->ed25519_key, app.cfg->rsa_key, &err);
	if (!app.keys) {
		log_error("%s", err);
		free(err);
		close_app(&app);
		return 1;
	}
	recovered = store_job_recover(app.store);
	if (recovered > 0)
		log_warn("store: %d job(s) were interrupted during DATA by a crash; %s", recovered,
		    app.cfg->postfix_log ? "each is sent again unless postfix_log shows the relay kept it" :
		    "they are sent again (the relay may already hold a copy; set postfix_log to check)");
	app.ghl = ghl_new(app.cfg, app.store);
	if (app.cfg->client_id) {
		app.oauth = oauth_new(app.cfg, app.store, app.ghl);
		ghl_set_oauth(app.ghl, app.oauth);
	}
	app.plugins = plugin_host_load(&app, &err);
	if (!app.plugins) {
		log_error("%s", err);
		free(err);
		close_app(&app);
		return 1;
	}

	/* signals are taken by sigwait below: block them before any thread */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	app.outbound = outbound_start(&app, (int)app.cfg->workers, REPORTER_THREADS);
	app.imap = imap_watch_start(&app, IMAP_WORKERS);
	if (app.cfg->lmtp_listen && !(lmtp = lmtp_start(&app, app.cfg->lmtp_listen, &err))) {
		log_error("%s", err);
		free(err);
		imap_watch_stop(app.imap);
		outbound_stop(app.outbound);
		close_app(&app);
		return 1;
	}
	lim.max_body = (size_t)app.cfg->max_body;
	lim.small_body = HTTP_SMALL_BODY;
	lim.max_buffered = (size_t)app.cfg->max_buffered;
	lim.conn_limit = (unsigned)app.cfg->conn_limit;
	lim.per_ip_limit = (unsigned)app.cfg->per_ip_limit;
	lim.conn_timeout = (unsigned)app.cfg->conn_timeout;
	lim.request_timeout = (unsigned)app.cfg->request_timeout;
	lim.threads = 8;
	/* a reload hands us the listening socket: no webhook meets a closed port */
	if (getenv("MB_LISTEN_FD")) {
		inherited_fd = atoi(getenv("MB_LISTEN_FD"));
		unsetenv("MB_LISTEN_FD");
	}
	srv = http_start(app.cfg->listen_host, app.cfg->listen_port, inherited_fd, routes,
	    sizeof(routes) / sizeof(routes[0]), &app, &lim, &err);
	if (!srv) {
		log_error("%s", err);
		free(err);
		lmtp_stop(lmtp);
		imap_watch_stop(app.imap);
		outbound_stop(app.outbound);
		close_app(&app);
		return 1;
	}
	log_info("mailbridge: listening on %s:%d, %zu location(s), %ld worker(s), signatures %s",
	    app.cfg->listen_host, http_port(srv), app.cfg->n_locations, app.cfg->workers,
	    app.cfg->require_signature ? "required" : "optional");
	/* retention soon after start, then hourly, whatever signals come */
	for (int64_t housekeeping_at = mono_ms() + 1000;;) {
		struct config *next;
		int64_t wait_ms = housekeeping_at - mono_ms();
		struct timespec ts = { wait_ms > 0 ? wait_ms / 1000 : 0, wait_ms > 0 ? wait_ms % 1000 * 1000000 : 0 };
		if ((sig = sigtimedwait(&set, NULL, &ts)) < 0) {
			if (errno == EAGAIN) {
				housekeeping(&app);
				housekeeping_at = mono_ms() + HOUSEKEEPING_S * 1000LL;
			}
			continue;
		}
		if (sig != SIGHUP)
			break;
		/* reload: only a valid configuration replaces the running one */
		next = config_load(path, stderr);
		if (!next) {
			log_error("mailbridge: SIGHUP: %s has errors; keeping the running configuration", path);
			continue;
		}
		config_free(next);
		log_info("mailbridge: SIGHUP, reloading %s", path);
		listen_fd = http_release_listener(srv);
		if (listen_fd >= 0)
			break;
		log_error("mailbridge: SIGHUP: cannot hand over the listener; keeping the running configuration");
	}
	if (sig != SIGHUP)
		log_info("mailbridge: %s, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
	http_stop(srv);
	lmtp_stop(lmtp);
	imap_watch_stop(app.imap);
	outbound_stop(app.outbound);
	close_app(&app);
	if (listen_fd >= 0) {
		/* in-flight work is finished and the queue is on disk: start over
		 * with the new configuration on the same listening socket */
		char fdstr[16];
		snprintf(fdstr, sizeof(fdstr), "%d", listen_fd);
		setenv("MB_LISTEN_FD", fdstr, 1);
		log_info("mailbridge: restarting with the new configuration");
		lib_deinit();
		/* the path, not /proc/self/exe: under valgrind that names the
		 * tool, not us (and a reload then runs an upgraded binary) */
		if (self_exe[0])
			execv(self_exe, saved_argv);
		execv("/proc/self/exe", saved_argv);
		log_error("mailbridge: reload failed: exec: %s", strerror(errno));
		return 1;
	}
	log_info("mailbridge: stopped");
	return 0;
}

/* quiet: errors and warnings only (the unit's ExecStartPre: the journal
 * gets no copy of the configuration on every start) */
static int
cmd_check_config(const char *path, bool quiet)
{
	struct config *cfg = config_load(path, stderr);
	if (!cfg)
		return 1;
	if (!quiet)
		config_dump(cfg, stdout);
	config_free(cfg);
	return 0;
}

static void
fmt_time(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void
print_job_row(const struct job *j, void *arg)
{
	char when[32];
	fmt_time(j->created_at, when, sizeof(when));
	printf("%-24s %-22s %-8s %-8s %3d  %-8s %s\n", j->message_id, j->location_id, j->type, j->state,
	    j->attempts, j->report_state, when);
}

static int
cmd_queue(const char *path, int argc, char **argv)
{
	struct app app;
	struct job *j = NULL;
	int r = 1;

	if (argc < 1) {
		usage(stderr);
		return 2;
	}
	if (open_app(&app, path) < 0)
		return 1;
	if (!strcmp(argv[0], "list")) {
		printf("%-24s %-22s %-8s %-8s %3s  %-8s %s\n", "MESSAGE", "LOCATION", "TYPE", "STATE", "TRY",
		    "REPORT", "CREATED");
		r = store_job_list(app.store, 1000, print_job_row, NULL) < 0;
	} else if (argc < 2) {
		usage(stderr);
		r = 2;
	} else if (!strcmp(argv[0], "show")) {
		if (store_job_get(app.store, argv[1], &j) == 1) {
			char when[32], next[32];
			fmt_time(j->created_at, when, sizeof(when));
			fmt_time(j->next_at, next, sizeof(next));
			printf("messageId     %s\nlocationId    %s\ntype          %s\nstate         %s\n"
			    "attempts      %d\ncreated       %s\nnext attempt  %s\nlast reply    %d %s\n"
			    "Message-ID    %s\nrecipients    %s\nreport        %s %s (%d attempts) %s\n",
			    j->message_id, j->location_id, j->type, j->state, j->attempts, when, next,
			    j->last_code, j->last_error ? j->last_error : "", j->rfc_message_id ? j->rfc_message_id : "-",
			    j->rcpt_state ? j->rcpt_state : "-", j->report_status ? j->report_status : "-",
			    j->report_state, j->report_attempts, j->report_error ? j->report_error : "");
			r = 0;
		} else {
			fprintf(stderr, "no job %s\n", argv[1]);
		}
	} else if (!strcmp(argv[0], "retry")) {
		r = store_job_retry(app.store, argv[1]) == 1 ? 0 : 1;
		fprintf(r ? stderr : stdout, r ? "no queued or failed job %s with its payload (a sent job cannot go again)\n" :
		    "job %s queued now\n", argv[1]);
	} else if (!strcmp(argv[0], "drop")) {
		r = store_job_drop(app.store, argv[1]) == 1 ? 0 : 1;
		fprintf(r ? stderr : stdout, r ? "no droppable job %s (not found or being sent)\n" :
		    "job %s dropped\n", argv[1]);
	} else {
		usage(stderr);
		r = 2;
	}
	store_job_free(j);
	close_app(&app);
	return r;
}

static void
print_inbound_row(const struct inbound_row *r, void *arg)
{
	char when[32];
	fmt_time(r->created_at, when, sizeof(when));
	printf("%-20s %-8s %3d %s %s\n    %s%s%s\n", r->location_id, r->state, r->attempts, when, r->key,
	    r->summary ? r->summary : "", r->error ? "\n    error: " : "", r->error ? r->error : "");
}

static int
cmd_inbound(const char *path, int argc, char **argv)
{
	struct app app;
	int r = 1;

	if (argc < 1 || (strcmp(argv[0], "list") && argc < 3)) {
		usage(stderr);
		return 2;
	}
	if (open_app(&app, path) < 0)
		return 1;
	if (!strcmp(argv[0], "list")) {
		r = store_inbound_list(app.store, argc > 1 ? argv[1] : NULL, print_inbound_row, NULL) < 0;
	} else if (!strcmp(argv[0], "retry")) {
		const struct location_config *loc = config_location(app.cfg, argv[1]);
		if (!loc) {
			fprintf(stderr, "location %s is not configured\n", argv[1]);
		} else {
			app.ghl = ghl_new(app.cfg, app.store);
			if (app.cfg->client_id) {
				app.oauth = oauth_new(app.cfg, app.store, app.ghl);
				ghl_set_oauth(app.ghl, app.oauth);
			}
			r = inbound_retry(&app, loc, argv[2]) == INBOUND_DONE ? 0 : 1;
			printf("%s: %s\n", argv[2], r == 0 ? "processed (see inbound list)" :
			    "not retried (unknown key, or HighLevel still unavailable)");
		}
	} else {
		usage(stderr);
		r = 2;
	}
	close_app(&app);
	return r;
}

/* A call logged from a script (a PBX hook, a CDR export). */
static int
cmd_call_log(const char *path, const char *location, const char *direction, const char *from, const char *to,
    const char *status, const char *recording)
{
	struct app app;
	const struct location_config *loc;
	struct call_record c = { 0 };
	char *mid = NULL, *err = NULL;
	int r;

	if (!location || !direction || !from || !to || !status ||
	    (strcmp(direction, "inbound") && strcmp(direction, "outbound"))) {
		usage(stderr);
		return 2;
	}
	if (open_app(&app, path) < 0)
		return 1;
	loc = config_location(app.cfg, location);
	if (!loc) {
		fprintf(stderr, "location %s is not configured\n", location);
		close_app(&app);
		return 1;
	}
	app.ghl = ghl_new(app.cfg, app.store);
	if (app.cfg->client_id) {
		app.oauth = oauth_new(app.cfg, app.store, app.ghl);
		ghl_set_oauth(app.ghl, app.oauth);
	}
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
	close_app(&app);
	return r == 1 ? 0 : r == 0 ? 1 : 75;   /* 75 = EX_TEMPFAIL */
}

static void
print_event(int64_t at, const char *message_id, const char *kind, const char *detail, void *arg)
{
	char when[32];
	fmt_time(at, when, sizeof(when));
	printf("%s %03d  %-22s %-8s %s\n", when, (int)(at % 1000), message_id ? message_id : "-", kind,
	    detail ? detail : "");
}

/* The journey of a message: by HighLevel messageId, Message-ID or address. */
static int
cmd_trace(const char *path, int argc, char **argv)
{
	struct app app;
	char *key;
	int n;

	if (argc < 1) {
		usage(stderr);
		return 2;
	}
	if (open_app(&app, path) < 0)
		return 1;
	key = xstrdup(argv[0][0] == '<' ? argv[0] + 1 : argv[0]);
	if (*key && key[strlen(key) - 1] == '>')
		key[strlen(key) - 1] = '\0';
	n = store_events_each(app.store, key, print_event, NULL);
	if (n == 0)
		fprintf(stderr, "nothing recorded for %s (events are kept %ld days)\n", argv[0], app.cfg->events_days);
	free(key);
	close_app(&app);
	return n > 0 ? 0 : 1;
}

static int
cmd_send_test(const char *path, const char *location, const char *to)
{
	struct app app;
	const struct location_config *loc;
	int r;

	if (!location || !to) {
		usage(stderr);
		return 2;
	}
	app.cfg = load_config(path);
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

static int
cmd_accounts(const char *path)
{
	struct app app;
	if (open_app(&app, path) < 0)
		return 1;
	printf("%-24s %-10s %-32s %-5s %s\n", "LOCATION", "MODE", "TOKEN", "SMTP", "IMAP WATCHER");
	for (size_t i = 0; i < app.cfg->n_locations; i++) {
		const struct location_config *loc = &app.cfg->locations[i];
		struct token *t = NULL;
		char tok[48], watch[160] = "not configured";
		char *wstate = NULL, *wdetail = NULL;
		int64_t wat = 0;
		if (store_token_get(app.store, loc->id, &t) == 1) {
			if (t->needs_reinstall)
				snprintf(tok, sizeof(tok), "needs re-install");
			else if (!t->access_token)
				snprintf(tok, sizeof(tok), "installed, no token");
			else {
				char when[32];
				fmt_time(t->expires_at, when, sizeof(when));
				snprintf(tok, sizeof(tok), "until %s", when);
			}
		} else {
			snprintf(tok, sizeof(tok), loc->token ? "static (config)" : "not installed");
		}
		if (store_is_uninstalled(app.store, loc->id) == 1)
			snprintf(tok, sizeof(tok), "uninstalled");
		if (loc->imap.host && store_watcher_get(app.store, loc->id, &wstate, &wdetail, &wat) == 1) {
			char when[32];
			fmt_time(wat, when, sizeof(when));
			snprintf(watch, sizeof(watch), "%s since %s%s%s", wstate, when, wdetail ? ": " : "", wdetail ? wdetail : "");
		} else if (loc->imap.host) {
			snprintf(watch, sizeof(watch), "not started yet");
		}
		printf("%-24s %-10s %-32s %-5s %s\n", loc->id, loc->mode, tok, loc->smtp.host ? "yes" : "no", watch);
		free(wstate);
		free(wdetail);
		store_token_free(t);
	}
	close_app(&app);
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "location", required_argument, NULL, 'l' },
		{ "to", required_argument, NULL, 't' },
		{ "from", required_argument, NULL, 'f' },
		{ "direction", required_argument, NULL, 'd' },
		{ "status", required_argument, NULL, 's' },
		{ "recording", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL, *location = NULL, *to = NULL, *cmd = "serve";
	const char *from = NULL, *direction = NULL, *status = NULL, *recording = NULL;
	int c, r;
	bool quiet = false;

	saved_argv = argv;
	if (readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1) < 0)
		self_exe[0] = '\0';
	/* GNU getopt permutes: options may come before or after the command
	 * and its arguments, which end up at argv[optind...] */
	while ((c = getopt_long(argc, argv, "c:hq", opts, NULL)) != -1) {
		switch (c) {
		case 'c': path = optarg; break;
		case 'l': location = optarg; break;
		case 't': to = optarg; break;
		case 'f': from = optarg; break;
		case 'd': direction = optarg; break;
		case 's': status = optarg; break;
		case 'r': recording = optarg; break;
		case 'q': quiet = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc)
		cmd = argv[optind++];
	if (!path)
		path = access(DEFAULT_CONFIG, R_OK) == 0 ? DEFAULT_CONFIG : "conf/mailbridge.conf";

	lib_init();
	if (!strcmp(cmd, "serve"))
		r = cmd_serve(path);
	else if (!strcmp(cmd, "check-config"))
		r = cmd_check_config(path, quiet);
	else if (!strcmp(cmd, "queue"))
		r = cmd_queue(path, argc - optind, argv + optind);
	else if (!strcmp(cmd, "send-test"))
		r = cmd_send_test(path, location, to);
	else if (!strcmp(cmd, "trace"))
		r = cmd_trace(path, argc - optind, argv + optind);
	else if (!strcmp(cmd, "call-log"))
		r = cmd_call_log(path, location, direction, from, to, status, recording);
	else if (!strcmp(cmd, "inbound"))
		r = cmd_inbound(path, argc - optind, argv + optind);
	else if (!strcmp(cmd, "accounts"))
		r = cmd_accounts(path);
	else {
		usage(stderr);
		r = 2;
	}
	lib_deinit();
	return r;
}
