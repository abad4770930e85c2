#include "metrics.h"
#include "app.h"
#include "config.h"
#include "store.h"
#include "store_jobs.h"
#include "util.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned long counters[M__COUNT];

/* name, label: one Prometheus series per counter */
static const struct { const char *name, *labels, *help; } series[M__COUNT] = {
	[M_WEBHOOK_ACCEPTED] = { "mailbridge_webhooks_total", "result=\"accepted\"", "Delivery URL webhooks by outcome" },
	[M_WEBHOOK_DUPLICATE] = { "mailbridge_webhooks_total", "result=\"duplicate\"", NULL },
	[M_WEBHOOK_BAD_SIGNATURE] = { "mailbridge_webhooks_total", "result=\"bad_signature\"", NULL },
	[M_WEBHOOK_INVALID] = { "mailbridge_webhooks_total", "result=\"invalid\"", NULL },
	[M_WEBHOOK_UNKNOWN_LOCATION] = { "mailbridge_webhooks_total", "result=\"unknown_location\"", NULL },
	[M_WEBHOOK_UNSUPPORTED_TYPE] = { "mailbridge_webhooks_total", "result=\"unsupported_type\"", NULL },
	[M_WEBHOOK_STORE_ERROR] = { "mailbridge_webhooks_total", "result=\"store_error\"", NULL },
	[M_SMTP_2XX] = { "mailbridge_smtp_replies_total", "class=\"2xx\"", "Final SMTP replies per recipient" },
	[M_SMTP_4XX] = { "mailbridge_smtp_replies_total", "class=\"4xx\"", NULL },
	[M_SMTP_5XX] = { "mailbridge_smtp_replies_total", "class=\"5xx\"", NULL },
	[M_SMTP_NO_REPLY] = { "mailbridge_smtp_replies_total", "class=\"none\"", NULL },
	[M_JOB_RETRIES] = { "mailbridge_job_attempts_total", "outcome=\"retry\"", "Send attempts by outcome" },
	[M_JOB_SENT] = { "mailbridge_job_attempts_total", "outcome=\"sent\"", NULL },
	[M_JOB_FAILED] = { "mailbridge_job_attempts_total", "outcome=\"failed\"", NULL },
	[M_REPORT_POSTED] = { "mailbridge_status_reports_total", "result=\"posted\"", "Status updates to HighLevel" },
	[M_REPORT_RETRY] = { "mailbridge_status_reports_total", "result=\"retry\"", NULL },
	[M_REPORT_GAVE_UP] = { "mailbridge_status_reports_total", "result=\"gave_up\"", NULL },
	[M_DSN_APPLIED] = { "mailbridge_dsns_total", "", "DSNs matched to an outbound message" },
	[M_INBOUND_POSTED] = { "mailbridge_inbound_total", "result=\"posted\"", "Received messages by outcome" },
	[M_INBOUND_SKIPPED] = { "mailbridge_inbound_total", "result=\"skipped\"", NULL },
	[M_INBOUND_FAILED] = { "mailbridge_inbound_total", "result=\"failed\"", NULL },
	[M_INBOUND_RETRY] = { "mailbridge_inbound_total", "result=\"retry\"", NULL },
	[M_GHL_2XX] = { "mailbridge_highlevel_requests_total", "status=\"2xx\"", "HighLevel API calls by answer" },
	[M_GHL_4XX] = { "mailbridge_highlevel_requests_total", "status=\"4xx\"", NULL },
	[M_GHL_429] = { "mailbridge_highlevel_requests_total", "status=\"429\"", NULL },
	[M_GHL_5XX] = { "mailbridge_highlevel_requests_total", "status=\"5xx\"", NULL },
	[M_GHL_NETWORK] = { "mailbridge_highlevel_requests_total", "status=\"network\"", NULL },
	[M_GHL_THROTTLED] = { "mailbridge_rate_limit_waits_total", "", "Calls held back by our own limiter" },
	[M_TOKEN_REFRESH_OK] = { "mailbridge_token_refreshes_total", "result=\"ok\"", "OAuth refreshes" },
	[M_TOKEN_REFRESH_FAILED] = { "mailbridge_token_refreshes_total", "result=\"failed\"", NULL },
};

void
metrics_inc(enum metric m)
{
	__atomic_add_fetch(&counters[m], 1, __ATOMIC_RELAXED);
}

unsigned long
metrics_get(enum metric m)
{
	return __atomic_load_n(&counters[m], __ATOMIC_RELAXED);
}

static struct {
	metrics_gauge_fn fn;
	void *arg;
} gauges[METRICS_MAX_GAUGES];
static size_t n_gauges;

int
metrics_gauge_add(metrics_gauge_fn fn, void *arg)
{
	if (n_gauges == METRICS_MAX_GAUGES)
		return -1;
	gauges[n_gauges].fn = fn;
	gauges[n_gauges++].arg = arg;
	return 0;
}

void
metrics_gauges_clear(void)
{
	n_gauges = 0;
}

void
metrics_http(void *ctx, const struct http_request *req, struct http_response *resp)
{
	struct app *app = ctx;
	char *out = NULL;
	size_t len = 0;
	FILE *f;

	if (app->cfg->metrics_token) {
		const char *auth = http_header(req, "Authorization");
		char *want = xasprintf("Bearer %s", app->cfg->metrics_token);
		bool ok = secret_equal(auth, want);   /* constant time */
		free(want);
		if (!ok) {
			http_json_error(resp, 401, "metrics need the bearer token", NULL);
			return;
		}
	}
	f = open_memstream(&out, &len);
	for (int i = 0; i < M__COUNT; i++) {
		if (series[i].help)
			fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", series[i].name, series[i].help, series[i].name);
		fprintf(f, "%s%s%s%s %lu\n", series[i].name, *series[i].labels ? "{" : "", series[i].labels,
		    *series[i].labels ? "}" : "", metrics_get((enum metric)i));
	}
	fprintf(f, "# HELP mailbridge_jobs Outbound jobs by state\n# TYPE mailbridge_jobs gauge\n");
	for (int i = 0; i < JOB_STATE_N; i++)
		fprintf(f, "mailbridge_jobs{state=\"%s\"} %d\n", job_state_name((enum job_state)i),
		    store_job_count(app->store, (enum job_state)i));
	fprintf(f, "# HELP mailbridge_build_info The running version\n# TYPE mailbridge_build_info gauge\n"
	    "mailbridge_build_info{version=\"%s\",commit=\"%s\"} 1\n", MB_VERSION, MB_COMMIT);
	fprintf(f, "# HELP mailbridge_oldest_queued_job_seconds Age of the oldest job still queued\n"
	    "# TYPE mailbridge_oldest_queued_job_seconds gauge\nmailbridge_oldest_queued_job_seconds %.1f\n",
	    store_job_oldest_queued_age(app->store) / 1000.0);
	{
		/* what a soak watches: RSS, and how much of it is SQLite's */
		int64_t heap, file;
		long pages = 0, shared = 0;
		FILE *statm = fopen("/proc/self/statm", "r");
		if (statm) {
			if (fscanf(statm, "%*d %ld %ld", &pages, &shared) != 2)
				pages = shared = 0;
			fclose(statm);
		}
		store_memory(app->store, &heap, &file);
		/* anonymous = resident minus file-backed pages (library code as it
		 * is first run); of that, what malloc has handed out and not got
		 * back: if RSS grows while this stays flat, it is fragmentation */
		struct mallinfo2 mi = mallinfo2();
		fprintf(f, "# HELP process_resident_memory_bytes Resident memory\n"
		    "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %lld\n"
		    "# HELP mailbridge_resident_anon_bytes Resident memory not backed by files (heap, stacks)\n"
		    "# TYPE mailbridge_resident_anon_bytes gauge\nmailbridge_resident_anon_bytes %lld\n"
		    "# HELP mailbridge_store_memory_bytes SQLite heap (page cache, statements)\n"
		    "# TYPE mailbridge_store_memory_bytes gauge\nmailbridge_store_memory_bytes %lld\n"
		    "# HELP mailbridge_store_file_bytes Database size (see [store] keep_days)\n"
		    "# TYPE mailbridge_store_file_bytes gauge\nmailbridge_store_file_bytes %lld\n",
		    (long long)pages * sysconf(_SC_PAGESIZE), (long long)(pages - shared) * sysconf(_SC_PAGESIZE),
		    (long long)heap, (long long)file);
		/* glibc's figure; a sanitizer's or valgrind's allocator reports 0 */
		if (mi.uordblks + mi.hblkhd > 0)
			fprintf(f, "# HELP mailbridge_heap_inuse_bytes Bytes allocated with malloc and not freed\n"
			    "# TYPE mailbridge_heap_inuse_bytes gauge\nmailbridge_heap_inuse_bytes %lld\n",
			    (long long)(mi.uordblks + mi.hblkhd));
	}
	for (size_t i = 0; i < n_gauges; i++)
		gauges[i].fn(gauges[i].arg, f);
	fclose(f);
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4";
	resp->body = out;
}
