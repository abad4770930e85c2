#include "metrics.h"
#include "app.h"
#include "config.h"
#include "store.h"
#include "store_instances.h"
#include "store_jobs.h"
#include "store_tokens.h"
#include "util.h"

#include <malloc.h>
#include <pthread.h>
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
	[M_PAYLOAD_FROM_WEBHOOK] = { "mailbridge_sender_payloads_total", "parsed=\"at_webhook\"",
		"Payloads a sender took as the webhook parsed them, or parsed again from the store" },
	[M_PAYLOAD_FROM_STORE] = { "mailbridge_sender_payloads_total", "parsed=\"from_store\"", NULL },
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
	[M_GHL_SHARE_ASK] = { "mailbridge_rate_limit_shared_asks_total", "",
	    "Round trips to the window shared with other instances (each leases one or more calls)" },
	[M_TOKEN_REFRESH_OK] = { "mailbridge_token_refreshes_total", "result=\"ok\"", "OAuth refreshes" },
	[M_TOKEN_REFRESH_FAILED] = { "mailbridge_token_refreshes_total", "result=\"failed\"", NULL },
	[M_ENGAGE_POSTED] = { "mailbridge_engagement_batches_total", "result=\"posted\"",
		"Engagement event batches posted on their own (those riding on a status are not counted here)" },
	[M_ENGAGE_RETRY] = { "mailbridge_engagement_batches_total", "result=\"retry\"", NULL },
	[M_ENGAGE_GAVE_UP] = { "mailbridge_engagement_batches_total", "result=\"gave_up\"", NULL },
	[M_ENGAGE_V2] = { "mailbridge_engagement_batches_total", "result=\"v2_dropped\"", NULL },
	[M_TRACK_COUNTED] = { "mailbridge_tracking_hits_total", "result=\"counted\"", "Open and click requests" },
	[M_TRACK_NOT_COUNTED] = { "mailbridge_tracking_hits_total", "result=\"not_counted\"", NULL },
	[M_TRACK_BAD_TOKEN] = { "mailbridge_tracking_hits_total", "result=\"bad_token\"", NULL },
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

/* upper bounds in microseconds; the last bucket is +Inf */
static const int64_t bucket_us[] = { 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
	1000000, 2500000, 5000000, 10000000, 30000000, 60000000 };
#define N_BUCKETS (sizeof(bucket_us) / sizeof(bucket_us[0]))

static struct {
	unsigned long buckets[N_BUCKETS + 1];   /* not cumulative; summed at scrape */
	unsigned long long sum_us;
	unsigned long count;
} hist[H__COUNT];

static const struct { const char *name, *help; } hist_series[H__COUNT] = {
	[H_WEBHOOK_ACK] = { "mailbridge_webhook_ack_seconds", "Delivery URL: request received to durable answer" },
	[H_SMTP_TRANSACTION] = { "mailbridge_smtp_transaction_seconds", "One message's SMTP transaction" },
	[H_HIGHLEVEL_CALL] = { "mailbridge_highlevel_call_seconds", "One HighLevel API request" },
	[H_REPLY_TO_POST] = { "mailbridge_reply_to_post_seconds", "A received reply to its post in HighLevel" },
};

void
metrics_observe(enum histogram h, int64_t usec)
{
	size_t b = 0;
	if (usec < 0)
		usec = 0;
	while (b < N_BUCKETS && usec > bucket_us[b])
		b++;
	__atomic_add_fetch(&hist[h].buckets[b], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&hist[h].sum_us, (unsigned long long)usec, __ATOMIC_RELAXED);
	__atomic_add_fetch(&hist[h].count, 1, __ATOMIC_RELAXED);
}

static void
write_histograms(FILE *f)
{
	for (int h = 0; h < H__COUNT; h++) {
		unsigned long cum = 0;
		fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", hist_series[h].name, hist_series[h].help,
		    hist_series[h].name);
		for (size_t b = 0; b <= N_BUCKETS; b++) {
			cum += __atomic_load_n(&hist[h].buckets[b], __ATOMIC_RELAXED);
			if (b < N_BUCKETS)
				fprintf(f, "%s_bucket{le=\"%g\"} %lu\n", hist_series[h].name, bucket_us[b] / 1e6, cum);
			else
				fprintf(f, "%s_bucket{le=\"+Inf\"} %lu\n", hist_series[h].name, cum);
		}
		fprintf(f, "%s_sum %.6f\n%s_count %lu\n", hist_series[h].name,
		    __atomic_load_n(&hist[h].sum_us, __ATOMIC_RELAXED) / 1e6, hist_series[h].name,
		    __atomic_load_n(&hist[h].count, __ATOMIC_RELAXED));
	}
}

/* Per-location failures: a small table, filled as failures happen (they
 * are rare), so the series exist only for locations that failed. */
static struct {
	char id[65];
	unsigned long n[LF__COUNT];
} loc_fail[METRICS_MAX_LOCATIONS + 1];   /* the last: "_other" */
static size_t n_loc_fail;
static pthread_mutex_t loc_fail_lock = PTHREAD_MUTEX_INITIALIZER;

void
metrics_location_failure(const char *location_id, enum location_failure kind)
{
	size_t i;
	pthread_mutex_lock(&loc_fail_lock);
	for (i = 0; i < n_loc_fail && strcmp(loc_fail[i].id, location_id); i++)
		;
	if (i == n_loc_fail && n_loc_fail < METRICS_MAX_LOCATIONS)
		snprintf(loc_fail[n_loc_fail++].id, sizeof(loc_fail[0].id), "%s", location_id);
	else if (i == n_loc_fail)
		i = METRICS_MAX_LOCATIONS;
	loc_fail[i].n[kind]++;
	pthread_mutex_unlock(&loc_fail_lock);
}

static void
write_location_failures(FILE *f)
{
	static const char *const kinds[LF__COUNT] = { "send", "report", "inbound" };
	fprintf(f, "# HELP mailbridge_location_failures_total Failures by location (at most %d; the rest "
	    "as _other)\n# TYPE mailbridge_location_failures_total counter\n", METRICS_MAX_LOCATIONS);
	pthread_mutex_lock(&loc_fail_lock);
	for (size_t i = 0; i <= METRICS_MAX_LOCATIONS; i++) {
		const char *id = i == METRICS_MAX_LOCATIONS ? "_other" : loc_fail[i].id;
		if (i >= n_loc_fail && i != METRICS_MAX_LOCATIONS)
			continue;
		for (int k = 0; k < LF__COUNT; k++)
			if (loc_fail[i].n[k])
				/* location ids are [A-Za-z0-9_-] (config.c): nothing to escape */
				fprintf(f, "mailbridge_location_failures_total{location=\"%s\",kind=\"%s\"} %lu\n", id,
				    kinds[k], loc_fail[i].n[k]);
	}
	pthread_mutex_unlock(&loc_fail_lock);
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
	write_histograms(f);
	write_location_failures(f);
	fprintf(f, "# HELP mailbridge_jobs Outbound jobs by state\n# TYPE mailbridge_jobs gauge\n");
	for (int i = 0; i < JOB_STATE_N; i++)
		fprintf(f, "mailbridge_jobs{state=\"%s\"} %d\n", job_state_name((enum job_state)i),
		    store_job_count(app->store, (enum job_state)i));
	fprintf(f, "# HELP mailbridge_tokens_needing_reinstall Locations whose refresh token HighLevel refused\n"
	    "# TYPE mailbridge_tokens_needing_reinstall gauge\nmailbridge_tokens_needing_reinstall %d\n",
	    store_token_count_reinstall(app->store));
	/* which instance of several on one store this is ([server] instance):
	 * not "instance", which Prometheus sets to the scraped address */
	fprintf(f, "# HELP mailbridge_build_info The running version, this instance's name and its store\n"
	    "# TYPE mailbridge_build_info gauge\n"
	    "mailbridge_build_info{version=\"%s\",commit=\"%s\",mailbridge_instance=\"%s\",store=\"%s\"} 1\n",
	    MB_VERSION, MB_COMMIT, store_instance_name(app->store), store_backend_name(app->store));
	if (store_is_shared(app->store))
		fprintf(f, "# HELP mailbridge_instances_live Instances beating on the shared store, this one included\n"
		    "# TYPE mailbridge_instances_live gauge\nmailbridge_instances_live %d\n",
		    store_instance_live(app->store));
	if (store_is_shared(app->store)) {
		/* PostgreSQL writes webhooks' jobs in groups (store_job_add):
		 * adds over groups is the mean group */
		int64_t groups, adds;
		store_job_add_groups(app->store, &groups, &adds);
		fprintf(f, "# HELP mailbridge_store_job_add_groups_total Transactions that wrote webhooks' jobs\n"
		    "# TYPE mailbridge_store_job_add_groups_total counter\nmailbridge_store_job_add_groups_total %lld\n"
		    "# HELP mailbridge_store_job_adds_total Webhooks' jobs written in those transactions\n"
		    "# TYPE mailbridge_store_job_adds_total counter\nmailbridge_store_job_adds_total %lld\n",
		    (long long)groups, (long long)adds);
	}
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
