/* daemon: `mailbridge serve`. Starts the HTTP listener, the workers and
 * reporters, the IMAP watchers and LMTP, then waits for signals: SIGTERM
 * and SIGINT stop, SIGHUP reloads (re-exec on the same listening socket).
 * Retention runs on a deadline between signals. */
#include "app.h"
#include "cli.h"
#include "calllog.h"
#include "config.h"
#include "engagement.h"
#include "tracking.h"
#include "ghl.h"
#include "http.h"
#include "mailboxes.h"
#include "inbound.h"
#include "instance.h"
#include "jobs.h"
#include "lmtp.h"
#include "log.h"
#include "metrics.h"
#include "status.h"
#include "unsubscribe.h"
#include "oauth.h"
#include "outbound.h"
#include "plugin_host.h"
#include "sig.h"
#include "store_events.h"
#include "util.h"
#include "webhook.h"

#include <curl/curl.h>
#include <systemd/sd-daemon.h>
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <gmime/gmime.h>
#include <gnutls/gnutls.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


#define REPORTER_THREADS 2
#define HOUSEKEEPING_S 3600      /* store retention pass */
#define INBOUND_POSTERS 4
#define DAEMON_MALLOC_ARENAS 2   /* see daemon_serve */

static char **saved_argv;        /* for the re-exec of a SIGHUP reload */
static char self_exe[4096];      /* our binary's path, read at start */

static const struct http_route routes[] = {
	/* the Delivery URL alone takes [server] max_body; the others 64 KiB */
	{ "POST", "/webhooks/provider", webhook_provider, true, webhook_provider_precheck },
	{ "POST", "/webhooks/provider/*", webhook_provider, true, webhook_provider_precheck },   /* delivery_token */
	{ "POST", "/webhooks/app", webhook_app, false, webhook_app_precheck },
	{ "GET", "/oauth/start", oauth_http_start, false, NULL },
	{ "GET", "/oauth/callback", oauth_http_callback, false, NULL },
	{ "GET", "/healthz", webhook_health, false, NULL },
	{ "GET", "/metrics", metrics_http, false, NULL },
	{ "GET", "/status", status_http, false, NULL },
	{ "GET", "/u/*", unsubscribe_http, false, NULL },
	{ "*", "/o/*", tracking_http, false, NULL },
	{ "*", "/c/*", tracking_http, false, NULL },
	{ "POST", "/u/*", unsubscribe_http, false, NULL },
	{ "*", "/plugins/*", plugin_http, false, NULL },
};
#define HTTP_SMALL_BODY 65536

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
	if (p.payloads || p.jobs || p.webhooks || p.inbound || p.threads || p.engagement || p.events || p.replays)
		log_info("store: pruned payloads=%lld jobs=%lld webhooks=%lld inbound=%lld threads=%lld engagement=%lld "
		    "events=%lld replay_guard=%lld", (long long)p.payloads, (long long)p.jobs, (long long)p.webhooks,
		    (long long)p.inbound, (long long)p.threads, (long long)p.engagement, (long long)p.events,
		    (long long)p.replays);
}

/* systemd's reload protocol: RELOADING=1 with the monotonic time; the
 * READY=1 of the exec'd daemon (same PID) ends it. */
static void
notify_reloading(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	(void)sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL);
}

int
daemon_serve(const char *path, char **argv)
{
	struct app app;
	struct http_server *srv;
	struct lmtp_server *lmtp = NULL;
	struct mailboxes *mailboxes;
	struct http_limits lim;
	sigset_t set;
	char *err = NULL;
	int sig, recovered, inherited_fd = -1, listen_fd = -1;

	saved_argv = argv;
	/* glibc gives each thread that allocates its own arena (up to 8 per
	 * core), and each keeps the pages it once held: with some twenty
	 * threads that is most of a burst's anonymous RSS. Two arenas keep the
	 * contention low (our threads mostly wait on the network or the store
	 * lock) and the memory small. MALLOC_ARENA_MAX in the environment wins. */
	if (!getenv("MALLOC_ARENA_MAX"))
		mallopt(M_ARENA_MAX, DAEMON_MALLOC_ARENAS);
	if (readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1) < 0)
		self_exe[0] = '\0';

	if (app_open(&app, path) < 0)
		return 1;
	app.keys = sig_keys_load(app.cfg->ed25519_key, app.cfg->rsa_key, &err);
	if (!app.keys) {
		log_error("%s", err);
		free(err);
		app_close(&app);
		return 1;
	}
	recovered = instance_start(&app);
	if (recovered < 0) {
		log_error("store: cannot put interrupted jobs back in the queue; not starting");
		app_close(&app);
		return 1;
	}
	if (recovered > 0)
		log_warn("store: %d job(s) were interrupted during DATA by a crash; %s", recovered,
		    app.cfg->postfix_log ? "each is sent again unless postfix_log shows the relay kept it" :
		    "they are sent again (the relay may already hold a copy; set postfix_log to check)");
	app_open_highlevel(&app);
	metrics_gauge_add(ghl_write_gauges, app.ghl);   /* before the IMAP watcher's, as they print */
	app.plugins = plugin_host_load(&app, &err);
	if (!app.plugins) {
		log_error("%s", err);
		free(err);
		app_close(&app);
		return 1;
	}

	/* signals are taken by sigwait below: block them before the threads
	 * started from here on inherit the mask (the store's checkpoint
	 * thread, started in app_open, blocks every signal itself) */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	/* before the workers, which ask it each location's status API */
	app.engagement = engagement_start(&app);
	app.outbound = outbound_start(&app, (int)app.cfg->workers, REPORTER_THREADS);
	app.unsubscriber = unsubscribe_start(&app);
	app.tracker = tracking_start(&app);
	mailboxes = mailboxes_start(&app, INBOUND_POSTERS, (int)app.cfg->imap_workers);
	if (app.cfg->lmtp_listen && !(lmtp = lmtp_start(&app, app.cfg->lmtp_listen, &err))) {
		log_error("%s", err);
		free(err);
		mailboxes_stop(mailboxes);
		unsubscribe_stop(app.unsubscriber);
		tracking_stop(app.tracker);
		outbound_stop(app.outbound);
		engagement_stop(app.engagement);
		app_close(&app);
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
		mailboxes_stop(mailboxes);
		unsubscribe_stop(app.unsubscriber);
		tracking_stop(app.tracker);
		outbound_stop(app.outbound);
		engagement_stop(app.engagement);
		app_close(&app);
		return 1;
	}
	log_info("mailbridge: listening on %s:%d, %zu location(s), %ld worker(s), signatures %s",
	    app.cfg->listen_host, http_port(srv), app.cfg->n_locations, app.cfg->workers,
	    app.cfg->require_signature ? "required" : "optional");
	/* systemd (Type=notify): started once every part is up; after a
	 * reload's exec this tells it the reload is done */
	(void)sd_notifyf(0, "READY=1\nSTATUS=listening on %s:%d, %zu location(s)", app.cfg->listen_host,
	    app.cfg->listen_port, app.cfg->n_locations);
	/* the heartbeat (instance.c) at its pace; retention soon after start,
	 * then hourly, on one instance at a time; whatever signals come */
	for (int64_t housekeeping_at = mono_ms() + 1000, beat_at = mono_ms() + 1000;;) {
		struct config *next;
		int64_t now = mono_ms(), due = housekeeping_at < beat_at ? housekeeping_at : beat_at;
		int64_t wait_ms = due - now;
		struct timespec ts = { wait_ms > 0 ? wait_ms / 1000 : 0, wait_ms > 0 ? wait_ms % 1000 * 1000000 : 0 };
		if ((sig = sigtimedwait(&set, NULL, &ts)) < 0) {
			if (errno != EAGAIN)
				continue;
			if (mono_ms() >= beat_at) {
				beat_at = mono_ms() + instance_tick(&app);
				mailboxes_balance(mailboxes);
			}
			if (mono_ms() >= housekeeping_at) {
				if (instance_exclusive(&app, "prune", HOUSEKEEPING_S * 1000LL / 2, housekeeping) < 0)
					log_error("store: retention skipped: the prune lease cannot be read");
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
		notify_reloading();
		listen_fd = http_release_listener(srv);
		if (listen_fd >= 0)
			break;
		log_error("mailbridge: SIGHUP: cannot hand over the listener; keeping the running configuration");
		(void)sd_notify(0, "READY=1");   /* the reload is over: nothing changed */
	}
	if (sig != SIGHUP) {
		log_info("mailbridge: %s, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
		(void)sd_notify(0, "STOPPING=1");
	}
	http_stop(srv);
	metrics_gauges_clear();   /* nothing scrapes now; their objects go next */
	lmtp_stop(lmtp);
	mailboxes_stop(mailboxes);
	unsubscribe_stop(app.unsubscriber);
	tracking_stop(app.tracker);
	/* senders wake the events poster: they stop first */
	outbound_stop(app.outbound);
	engagement_stop(app.engagement);
	instance_stop(&app);
	app_close(&app);
	if (listen_fd >= 0) {
		/* in-flight work is finished and the queue is on disk: start over
		 * with the new configuration on the same listening socket */
		char fdstr[16];
		snprintf(fdstr, sizeof(fdstr), "%d", listen_fd);
		setenv("MB_LISTEN_FD", fdstr, 1);
		log_info("mailbridge: restarting with the new configuration");
		main_lib_deinit();
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

