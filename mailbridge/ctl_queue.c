/* ctl_queue: `mailbridge queue`, the durable outbound queue as an
 * administrator sees it (postqueue/postsuper's part): list with filters
 * and a total, show, retry (one, or every failed job), drop, flush. */
#include "app.h"
#include "cli.h"
#include "jobs.h"
#include "store_jobs.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_LIST_MAX 1000

/* "90s", "30m", "2h", "7d" (a bare number is seconds): ms, or -1. */
static int64_t
parse_age(const char *s)
{
	static const struct { char unit; int64_t ms; } units[] = {
		{ 's', 1000 }, { 'm', 60000 }, { 'h', 3600000 }, { 'd', 86400000 },
	};
	char *end;
	long long n = strtoll(s, &end, 10);
	if (end == s || n < 0 || n > 100000)
		return -1;
	if (!*end)
		return n * 1000;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (end[0] == units[i].unit && !end[1])
			return n * units[i].ms;
	return -1;
}

/* --state, --location and --older-than as a filter: 0, or 2 (usage). */
static int
filter_from_opts(const struct ctl_opts *o, struct job_filter *f)
{
	f->state = -1;
	f->location_id = o->location;
	f->created_before = 0;
	if (o->state && (f->state = job_state_parse(o->state)) < 0) {
		fprintf(stderr, "mailbridge queue: no state \"%s\" (queued, claimed, sending, sent or failed)\n", o->state);
		return 2;
	}
	if (o->older_than) {
		int64_t age = parse_age(o->older_than);
		if (age < 0) {
			fprintf(stderr, "mailbridge queue: --older-than wants an age such as 90s, 30m, 2h or 7d (got %s)\n",
			    o->older_than);
			return 2;
		}
		f->created_before = now_ms() - age;
	}
	return 0;
}

static json_t *
job_json(const struct job *j)
{
	char when[32];
	iso_time(j->created_at, when, sizeof(when));
	return json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:s?, s:s, s:i, s:s?}", "messageId", j->message_id,
	    "locationId", j->location_id, "type", j->type, "state", job_state_name(j->fsm.job), "attempts", j->attempts,
	    "report", job_report_state_name(j->fsm.report), "status", job_report_status_name(j->fsm.status),
	    "created", when, "lastCode", j->last_code, "lastError", j->last_error);
}

static void
print_job_row(const struct job *j, void *arg)
{
	char when[32];
	if (arg) {
		json_array_append_new(arg, job_json(j));
		return;
	}
	iso_time(j->created_at, when, sizeof(when));
	printf("%-24s %-22s %-8s %-8s %3d  %-8s %s\n", j->message_id, j->location_id, j->type,
	    job_state_name(j->fsm.job), j->attempts, job_report_state_name(j->fsm.report), when);
}

static int
queue_list(struct app *app, const struct ctl_opts *o, const struct job_filter *f)
{
	json_t *jobs = o->json ? json_array() : NULL;
	int total = 0, shown;

	if (!jobs)
		printf("%-24s %-22s %-8s %-8s %3s  %-8s %s\n", "MESSAGE", "LOCATION", "TYPE", "STATE", "TRY",
		    "REPORT", "CREATED");
	shown = store_job_list(app->store, f, QUEUE_LIST_MAX, &total, print_job_row, jobs);
	if (shown < 0) {
		json_decref(jobs);
		fprintf(stderr, "mailbridge queue list: the store could not be read\n");
		return 1;
	}
	if (jobs) {
		json_t *out = json_pack("{s:i, s:i, s:o}", "total", total, "shown", shown, "jobs", jobs);
		json_dumpf(out, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(out);
	} else if (shown < total) {
		/* postqueue -p's last line, and what was left out */
		printf("-- %d job(s) match; the newest %d are shown (narrow with --state, --location, --older-than)\n",
		    total, shown);
	} else {
		printf("-- %d job(s)\n", total);
	}
	return 0;
}

struct ids {
	char **v;
	size_t n;
};

static void
collect_id(const struct job *j, void *arg)
{
	struct ids *ids = arg;
	ids->v = xrealloc(ids->v, (ids->n + 1) * sizeof(*ids->v));
	ids->v[ids->n++] = xstrdup(j->message_id);
}

/* Every job the filter takes, put back in the queue due now: retry
 * --all-failed (failed jobs whose payload is still kept) and flush
 * (queued jobs waiting for a later attempt), as postqueue -f. */
static int
queue_requeue(struct app *app, const struct job_filter *f, const char *what)
{
	struct ids ids = { NULL, 0 };
	int done = 0, refused = 0;

	if (store_job_list(app->store, f, -1, NULL, collect_id, &ids) < 0) {
		fprintf(stderr, "mailbridge queue: the store could not be read\n");
		return 1;
	}
	for (size_t i = 0; i < ids.n; i++) {
		if (jobs_retry(app->store, ids.v[i]) == 1)
			done++;
		else
			refused++;
		free(ids.v[i]);
	}
	free(ids.v);
	printf("%d %s job(s) queued now", done, what);
	if (refused)
		printf("; %d could not go again (sent meanwhile, or their payload is no longer kept)", refused);
	putchar('\n');
	return 0;
}

static int
queue_show(struct app *app, const char *id, bool json)
{
	struct job *j = NULL;
	char when[32], next[32];

	if (store_job_get(app->store, id, &j) != 1) {
		fprintf(stderr, "no job %s\n", id);
		return 1;
	}
	iso_time(j->created_at, when, sizeof(when));
	if (job_is_open(j->fsm.job))
		iso_time(j->next_at, next, sizeof(next));
	else
		snprintf(next, sizeof(next), "- (%s)", job_state_name(j->fsm.job));
	if (json) {
		json_t *o = job_json(j);
		json_object_set_new(o, "nextAttempt", job_is_open(j->fsm.job) ? json_string(next) : json_null());
		json_object_set_new(o, "messageIdHeader", j->rfc_message_id ? json_string(j->rfc_message_id) : json_null());
		json_object_set_new(o, "recipients", j->rcpt_state ? json_string(j->rcpt_state) : json_null());
		json_object_set_new(o, "reportAttempts", json_integer(j->report_attempts));
		json_object_set_new(o, "reportError", j->report_error ? json_string(j->report_error) : json_null());
		json_dumpf(o, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(o);
	} else {
		printf("messageId     %s\nlocationId    %s\ntype          %s\nstate         %s\n"
		    "attempts      %d\ncreated       %s\nnext attempt  %s\nlast reply    %d %s\n"
		    "Message-ID    %s\nrecipients    %s\nreport        %s %s (%d attempts) %s\n",
		    j->message_id, j->location_id, j->type, job_state_name(j->fsm.job), j->attempts, when, next,
		    j->last_code, j->last_error ? j->last_error : "", j->rfc_message_id ? j->rfc_message_id : "-",
		    j->rcpt_state ? j->rcpt_state : "-", job_report_status_name(j->fsm.status) ?
		    job_report_status_name(j->fsm.status) : "-", job_report_state_name(j->fsm.report), j->report_attempts,
		    j->report_error ? j->report_error : "");
	}
	store_job_free(j);
	return 0;
}

int
ctl_queue(const struct ctl_opts *o)
{
	const char *verb = o->argc > 0 ? o->argv[0] : NULL;
	const char *id = o->argc > 1 ? o->argv[1] : NULL;
	bool read_only = verb && (!strcmp(verb, "list") || !strcmp(verb, "show"));
	struct job_filter f;
	struct app app;
	int r;

	if (!verb) {
		fprintf(stderr, "mailbridge queue: what to do? list, show ID, retry ID, retry --all-failed, drop ID "
		    "or flush\n");
		main_usage(stderr);
		return 2;
	}
	if (strcmp(verb, "list") && strcmp(verb, "show") && strcmp(verb, "retry") && strcmp(verb, "drop") &&
	    strcmp(verb, "flush")) {
		fprintf(stderr, "mailbridge queue: no subcommand \"%s\" (list, show, retry, drop or flush)\n", verb);
		main_usage(stderr);
		return 2;
	}
	if (!id && (!strcmp(verb, "show") || !strcmp(verb, "drop") || (!strcmp(verb, "retry") && !o->all_failed))) {
		fprintf(stderr, "mailbridge queue %s: which job? give its messageId%s\n", verb,
		    strcmp(verb, "retry") ? "" : " (or --all-failed)");
		main_usage(stderr);
		return 2;
	}
	if ((r = filter_from_opts(o, &f)) != 0)
		return r;
	if ((read_only ? app_open_readonly(&app, o->path) : app_open(&app, o->path)) < 0)
		return 1;
	if (!strcmp(verb, "list")) {
		r = queue_list(&app, o, &f);
	} else if (!strcmp(verb, "show")) {
		r = queue_show(&app, id, o->json);
	} else if (!strcmp(verb, "retry") && o->all_failed) {
		f.state = JOB_FAILED;
		r = queue_requeue(&app, &f, "failed");
	} else if (!strcmp(verb, "flush")) {
		f.state = JOB_QUEUED;
		r = queue_requeue(&app, &f, "waiting");
	} else if (!strcmp(verb, "retry")) {
		r = jobs_retry(app.store, id) == 1 ? 0 : 1;
		fprintf(r ? stderr : stdout, r ? "no queued or failed job %s with its payload (a sent job cannot go again)\n" :
		    "job %s queued now\n", id);
	} else {
		r = jobs_drop(app.store, id) == 1 ? 0 : 1;
		fprintf(r ? stderr : stdout, r ? "no droppable job %s (not found or being sent)\n" : "job %s dropped\n", id);
	}
	app_close(&app);
	return r;
}
