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
#include "store_jobs.h"
#include "store_tokens.h"
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


/* quiet: errors and warnings only (the unit's ExecStartPre: the journal
 * gets no copy of the configuration on every start) */
int
ctl_check_config(const char *path, bool quiet)
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
	printf("%-24s %-22s %-8s %-8s %3d  %-8s %s\n", j->message_id, j->location_id, j->type,
	    job_state_name(j->fsm.job), j->attempts, job_report_state_name(j->fsm.report), when);
}

int
ctl_queue(const char *path, int argc, char **argv)
{
	struct app app;
	struct job *j = NULL;
	int r = 1;

	if (argc < 1) {
		fprintf(stderr, "mailbridge queue: what to do? list, show ID, retry ID or drop ID\n");
		main_usage(stderr);
		return 2;
	}
	if (strcmp(argv[0], "list") && argc < 2) {
		fprintf(stderr, "mailbridge queue %s: which job? give its messageId\n", argv[0]);
		main_usage(stderr);
		return 2;
	}
	/* list and show only read */
	if ((!strcmp(argv[0], "list") || !strcmp(argv[0], "show") ? app_open_readonly(&app, path) :
	    app_open(&app, path)) < 0)
		return 1;
	if (!strcmp(argv[0], "list")) {
		printf("%-24s %-22s %-8s %-8s %3s  %-8s %s\n", "MESSAGE", "LOCATION", "TYPE", "STATE", "TRY",
		    "REPORT", "CREATED");
		r = store_job_list(app.store, 1000, print_job_row, NULL) < 0;
	} else if (argc < 2) {
		fprintf(stderr, "mailbridge queue %s: which job? give its messageId\n", argv[0]);
		main_usage(stderr);
		r = 2;
	} else if (!strcmp(argv[0], "show")) {
		if (store_job_get(app.store, argv[1], &j) == 1) {
			char when[32], next[32];
			fmt_time(j->created_at, when, sizeof(when));
			if (job_is_open(j->fsm.job))
				fmt_time(j->next_at, next, sizeof(next));
			else
				snprintf(next, sizeof(next), "- (%s)", job_state_name(j->fsm.job));
			printf("messageId     %s\nlocationId    %s\ntype          %s\nstate         %s\n"
			    "attempts      %d\ncreated       %s\nnext attempt  %s\nlast reply    %d %s\n"
			    "Message-ID    %s\nrecipients    %s\nreport        %s %s (%d attempts) %s\n",
			    j->message_id, j->location_id, j->type, job_state_name(j->fsm.job), j->attempts, when, next,
			    j->last_code, j->last_error ? j->last_error : "", j->rfc_message_id ? j->rfc_message_id : "-",
			    j->rcpt_state ? j->rcpt_state : "-", job_report_status_name(j->fsm.status) ?
			    job_report_status_name(j->fsm.status) : "-", job_report_state_name(j->fsm.report), j->report_attempts,
			    j->report_error ? j->report_error : "");
			r = 0;
		} else {
			fprintf(stderr, "no job %s\n", argv[1]);
		}
	} else if (!strcmp(argv[0], "retry")) {
		r = jobs_retry(app.store, argv[1]) == 1 ? 0 : 1;
		fprintf(r ? stderr : stdout, r ? "no queued or failed job %s with its payload (a sent job cannot go again)\n" :
		    "job %s queued now\n", argv[1]);
	} else if (!strcmp(argv[0], "drop")) {
		r = jobs_drop(app.store, argv[1]) == 1 ? 0 : 1;
		fprintf(r ? stderr : stdout, r ? "no droppable job %s (not found or being sent)\n" :
		    "job %s dropped\n", argv[1]);
	} else {
		fprintf(stderr, "mailbridge queue: no subcommand \"%s\" (list, show, retry or drop)\n", argv[0]);
		main_usage(stderr);
		r = 2;
	}
	store_job_free(j);
	app_close(&app);
	return r;
}

static void
print_inbound_row(const struct inbound_row *r, void *arg)
{
	char when[32];
	fmt_time(r->created_at, when, sizeof(when));
	printf("%-20s %-8s %3d %s %s\n    %s%s%s\n", r->location_id, inbound_state_name(r->state), r->attempts, when, r->key,
	    r->summary ? r->summary : "", r->error ? "\n    error: " : "", r->error ? r->error : "");
}

int
ctl_inbound(const char *path, int argc, char **argv)
{
	struct app app;
	int r = 1;

	if (argc < 1 || (strcmp(argv[0], "list") && argc < 3)) {
		fprintf(stderr, "mailbridge inbound: list [STATE], or retry LOCATION KEY\n");
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
		else {
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
ctl_call_log(const char *path, const char *location, const char *direction, const char *from, const char *to,
    const char *status, const char *recording)
{
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
	fmt_time(at, when, sizeof(when));
	/* 2026-11-29T21:09:33.123Z: the milliseconds where they belong */
	printf("%.19s.%03dZ  %-22s %-8s %s\n", when, (int)(at % 1000), message_id ? message_id : "-", kind,
	    detail ? detail : "");
}

/* The journey of a message: by HighLevel messageId, Message-ID or address. */
int
ctl_trace(const char *path, int argc, char **argv)
{
	struct app app;
	char *key;
	int n;

	if (argc < 1) {
		fprintf(stderr, "mailbridge trace: what to trace? a messageId, a Message-ID or an address\n");
		main_usage(stderr);
		return 2;
	}
	if (app_open_readonly(&app, path) < 0)
		return 1;
	key = xstrdup(argv[0][0] == '<' ? argv[0] + 1 : argv[0]);
	if (*key && key[strlen(key) - 1] == '>')
		key[strlen(key) - 1] = '\0';
	n = store_events_each(app.store, key, print_event, NULL);
	if (n == 0)
		fprintf(stderr, "nothing recorded for %s (events are kept %ld days)\n", argv[0], app.cfg->events_days);
	free(key);
	app_close(&app);
	return n > 0 ? 0 : 1;
}

int
ctl_send_test(const char *path, const char *location, const char *to)
{
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
ctl_accounts(const char *path)
{
	struct app app;
	if (app_open_readonly(&app, path) < 0)
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
	app_close(&app);
	return 0;
}


/* An online copy of the store (keys included), taken while the daemon runs. */
int
ctl_backup(const char *path, int argc, char **argv)
{
	struct app app;
	char *err = NULL;
	int64_t bytes = 0;
	int r;

	if (argc != 1) {
		fprintf(stderr, "mailbridge backup: name the file to write (mailbridge backup FILE)\n");
		return 2;
	}
	if (app_open_readonly(&app, path) < 0)
		return 1;
	r = store_backup(app.store, argv[0], &bytes, &err);
	if (r == 1)
		printf("store copied to %s (%lld bytes, mode 0600; it holds the store's keys)\n", argv[0],
		    (long long)bytes);
	else
		fprintf(stderr, "mailbridge backup: %s\n", err);
	free(err);
	app_close(&app);
	return r == 1 ? 0 : 1;
}
