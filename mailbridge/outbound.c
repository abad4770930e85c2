#include "outbound.h"
#include "poller.h"
#include "app.h"
#include "config.h"
#include "engage.h"
#include "engagement.h"
#include "fetch.h"
#include "ghl.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "mime_out.h"
#include "payload.h"
#include "plugin_host.h"
#include "relaylog.h"
#include "smtp_client.h"
#include "smtp_policy.h"
#include "store_jobs.h"
#include "store_engage.h"
#include "unsubscribe.h"
#include "store_threads.h"
#include "thread.h"
#include "tracking.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OUTBOUND_IDLE_POLL_MS     1000
#define OUTBOUND_NICE             5         /* see outbound_start */
#define OUTBOUND_SMTP_TIMEOUT_S   60
#define REPORT_LEASE_MS           120000
#define REPORT_IDLE_POLL_MS       200
#define REPORT_BASE_MS            2000      /* 403 "not downstreamed yet" heals in 5-10 s */
#define REPORT_MAX_MS             (10 * 60 * 1000)
#define REPORT_MAX_ATTEMPTS       60
#define REPORT_BATCH              8         /* posts' ends a reporter writes in one commit */
#define REPORT_BATCH_MS           50        /* ... the oldest kept at most this long before a post */
#define HANDOFF_MAX               64        /* jobs one thread hands others in memory */
#define CLAIM_BATCH_MAX           8         /* queued jobs one claim takes, at most */
#define PARSED_MAX                32        /* webhooks' parsed payloads kept for their senders */
#define PARSED_TTL_MS             2000
#define PARSED_MAX_BYTES          (1 << 20) /* of bodies: a burst of 4 MiB webhooks keeps none */

/* Jobs one thread hands others in memory, already theirs in the store:
 *   - reports: a sender that ends an attempt with a status due leases the
 *     report in the same commit and hands the job to a reporter: no claim
 *     (a commit) per report, no poll to find it;
 *   - sends: a sender's claim takes up to one due job per sender, works
 *     the oldest and leaves the rest here for the others: one statement
 *     (and on PostgreSQL one commit) claims a burst's jobs a few at a time.
 * The store's claims stay the way for the rest (DSNs, retries, a full
 * hand-off, the last run's). What is still here at the stop is handed
 * back: reports due now, sends queued again. */
struct handoff {
	pthread_mutex_t lock;
	struct job *jobs[HANDOFF_MAX];
	size_t head, n;
};

struct outbound {
	struct app *app;
	struct poller *senders;
	struct poller *reporters;
	struct handoff handoff;    /* leased reports, for the reporters */
	struct handoff claimed;    /* claimed jobs, for the senders */
	int claim_batch;
	struct payload_cache *parsed;  /* what the webhook parsed (payload.h) */
	atomic_bool reports_in_store;  /* a sender left a due report in the store, not the hand-off */
};

static bool
handoff_room(struct handoff *h)
{
	bool room;
	pthread_mutex_lock(&h->lock);
	room = h->n < HANDOFF_MAX;
	pthread_mutex_unlock(&h->lock);
	return room;
}

/* false when full (the caller keeps the job) */
static bool
handoff_push(struct handoff *h, struct job *job)
{
	bool ok;
	pthread_mutex_lock(&h->lock);
	if ((ok = h->n < HANDOFF_MAX))
		h->jobs[(h->head + h->n++) % HANDOFF_MAX] = job;
	pthread_mutex_unlock(&h->lock);
	return ok;
}

static struct job *
handoff_pop(struct handoff *h)
{
	struct job *job = NULL;
	pthread_mutex_lock(&h->lock);
	if (h->n) {
		job = h->jobs[h->head];
		h->head = (h->head + 1) % HANDOFF_MAX;
		h->n--;
	}
	pthread_mutex_unlock(&h->lock);
	return job;
}

/* A leased report no reporter will post: due again now, its attempt not
 * counted (store_report_defer), for the store's claim. */
static void
handoff_return(struct store *st, struct job *job)
{
	if (store_report_defer(st, job->id, now_ms()) < 0)
		log_error("report: messageId=%s cannot hand its report back (store error): it is posted once its lease "
		    "ends", job->message_id);
	store_job_free(job);
}

/* A claimed job no sender will begin: queued again, its attempt not
 * counted (jobs_release). */
static void
claimed_return(struct store *st, struct job *job)
{
	if (jobs_release(st, job) < 0)
		log_error("outbound: messageId=%s cannot hand its claim back (store error): it is queued again when "
		    "this instance is seen gone, or at its next start", job->message_id);
	else
		log_info("outbound: messageId=%s handed back to the queue, not begun", job->message_id);
	store_job_free(job);
}

/* Per-job working set, freed by job_ctx_clear. */
struct job_ctx {
	struct outbound *ob;
	struct job *job;
	struct payload *p;
	const struct location_config *loc;
	char *message_id;          /* ours, no <> */
	char *reply_token;
	char *reply_to;
	char *return_path;
	char *in_reply_to;
	char *references;
	struct addr from;
	struct mime_attachment *att;
	size_t n_att;
	json_t *rcpt_state;        /* addr -> {code, text} of finished recipients */
	json_t *temp_rcpts;        /* [addr] the relay deferred (4xx) in this attempt */
	const char *reply_text;    /* the relay's final reply, borrowed, for events */
	bool uncertain;            /* this attempt ended after the final dot, unanswered */
};

static void
job_ctx_clear(struct job_ctx *c)
{
	payload_free(c->p);
	free(c->message_id);
	free(c->reply_token);
	free(c->reply_to);
	free(c->return_path);
	free(c->in_reply_to);
	free(c->references);
	for (size_t i = 0; i < c->n_att; i++)
		mime_attachment_clear(&c->att[i]);
	free(c->att);
	json_decref(c->rcpt_state);
	json_decref(c->temp_rcpts);
}

/* Finds what this message answers and builds In-Reply-To / References. */
static void
outbound_thread(struct job_ctx *c, struct store *st)
{
	char *parent_id;
	struct msgmap *parent = thread_parent_for_outbound(st, c->loc->id, c->p->reply_to_alt_id,
	    c->p->email_message_id, c->p->message_id, &parent_id);

	thread_headers(parent, parent_id, &c->in_reply_to, &c->references);
	free(parent_id);
	store_msgmap_free(parent);
}

static int
outbound_prepare(struct job_ctx *c, struct app *app)
{
	const char *error, *field;
	const char *domain;

	if ((c->p = payload_cache_take(c->ob->parsed, c->job->message_id, c->job->payload, strlen(c->job->payload),
	    mono_ms())) != NULL) {
		metrics_inc(M_PAYLOAD_FROM_WEBHOOK);
	} else {
		metrics_inc(M_PAYLOAD_FROM_STORE);
		c->p = payload_parse(c->job->payload, strlen(c->job->payload), &error, &field);
	}
	if (!c->p)
		return -1;
	c->loc = config_location(app->cfg, c->job->location_id);
	if (!c->loc)
		return -1;
	domain = c->loc->reply_domain;
	c->message_id = xasprintf("mb.%s@%s", c->p->message_id, domain);
	c->reply_token = thread_token_make(app->address_key, c->loc->id, c->p->message_id);
	c->reply_to = thread_reply_address(c->loc, c->reply_token);
	c->return_path = thread_return_address(c->loc, c->reply_token);
	/* the webhook's sender only when the location allows it; the name
	 * a HighLevel user chose is kept either way */
	if (c->loc->allow_from_override && c->p->from) {
		c->from = *c->p->from;
	} else {
		c->from.name = c->p->from && c->p->from->name ? c->p->from->name : c->loc->from_name;
		c->from.addr = c->loc->from_addr;
	}
	c->rcpt_state = c->job->rcpt_state ? json_loads(c->job->rcpt_state, 0, NULL) : NULL;
	if (!json_is_object(c->rcpt_state)) {
		json_decref(c->rcpt_state);
		c->rcpt_state = json_object();
	}
	outbound_thread(c, app->store);
	return 0;
}

/* Fetches every attachment under one deadline and one size budget for
 * the whole message, so a webhook full of slow or huge URLs cannot hold
 * a worker or the memory for long. FETCH_OK, or the first failure's
 * class (with a generic reason: fetch.c logs the detail). */
static enum fetch_result
outbound_fetch(struct job_ctx *c, const struct config *cfg, size_t relay_max, char **error_r)
{
	size_t budget = (size_t)cfg->max_attachments;
	struct fetch_limits lim = { &cfg->attachment_allow, mono_ms() + cfg->attachment_timeout * 1000, 0,
		cfg->data_dir };

	/* never more than the relay takes: base64 makes 100 bytes 137 */
	if (relay_max > 0 && relay_max / 137 * 100 < budget)
		budget = relay_max / 137 * 100;
	c->att = xcalloc(c->p->n_attachments + 1, sizeof(*c->att));
	for (size_t i = 0; i < c->p->n_attachments; i++) {
		enum fetch_result r;
		lim.max_bytes = budget < (size_t)cfg->max_attachment ? budget : (size_t)cfg->max_attachment;
		r = fetch_attachment(c->p->attachments[i], &lim, &c->att[i], error_r);
		if (r != FETCH_OK) {
			char *numbered = xasprintf("%s (attachment %zu of %zu)", *error_r, i + 1, c->p->n_attachments);
			free(*error_r);
			*error_r = numbered;
			return r;
		}
		budget -= c->att[i].len;
		c->n_att++;
	}
	return FETCH_OK;
}

static char *
outbound_render(struct job_ctx *c, size_t *len_r)
{
	/* Gmail's feedback loop counts complaints per identifier, and only
	 * for identifiers shared by enough mail: the sending user (or
	 * "provider") and the location, not the message */
	char *fbid = xasprintf("%s:%s:mailbridge", c->p->user_id && *c->p->user_id ? c->p->user_id : "provider",
	    c->loc->id);
	char *unsub = unsubscribe_header(c->ob->app, c->loc, c->reply_token, c->p->contact_id, c->p->message_id);
	char *tracked = tracking_html(c->ob->app, c->loc, c->p->html, c->p->message_id, now_ms());
	char *out;
	struct mime_out m = {
		.from = &c->from, .reply_to = c->reply_to,
		.to = c->p->to, .n_to = c->p->n_to, .cc = c->p->cc, .n_cc = c->p->n_cc,
		.subject = c->p->subject, .html = tracked ? tracked : c->p->html, .text = c->p->text,
		.text_from = c->p->html,
		.message_id = c->message_id, .in_reply_to = c->in_reply_to, .references = c->references,
		.job_header = c->p->message_id, .date_ms = c->job->created_at, .feedback_id = fbid,
		.list_unsubscribe = unsub,
		.attachments = c->att, .n_attachments = c->n_att,
	};
	out = mime_out_render(&m, len_r);
	free(fbid);
	free(unsub);
	free(tracked);
	return out;
}

static void
smtp_params_for(const struct location_config *loc, struct smtp_params *sp)
{
	memset(sp, 0, sizeof(*sp));
	sp->host = loc->smtp.host;
	sp->port = (int)loc->smtp.port;
	sp->tls = loc->smtp.tls_mode;
	sp->tls_verify = loc->smtp.tls_verify;
	sp->ca_file = loc->smtp.ca_file;
	sp->user = loc->smtp.user;
	sp->password = loc->smtp.password;
	sp->timeout = OUTBOUND_SMTP_TIMEOUT_S;
}

/* Recipients still to send to: To, Cc, Bcc, each once, minus finished. */
static size_t
outbound_rcpts(struct job_ctx *c, const char ***rcpts_r)
{
	size_t n = 0, max = c->p->n_to + c->p->n_cc + c->p->n_bcc;
	const char **r = xcalloc(max + 1, sizeof(*r));
	const struct addr *lists[3] = { c->p->to, c->p->cc, c->p->bcc };
	size_t counts[3] = { c->p->n_to, c->p->n_cc, c->p->n_bcc };

	for (int l = 0; l < 3; l++)
		for (size_t i = 0; i < counts[l]; i++) {
			const char *a = lists[l][i].addr;
			bool dup = json_object_get(c->rcpt_state, a) != NULL;
			for (size_t k = 0; k < n && !dup; k++)
				dup = strcasecmp(r[k], a) == 0;
			if (!dup)
				r[n++] = a;
		}
	*rcpts_r = r;
	return n;
}

/* Recipients the relay has accepted in this or an earlier attempt. */
static size_t
count_accepted(json_t *rcpt_state)
{
	const char *k;
	json_t *v;
	size_t n = 0;
	json_object_foreach(rcpt_state, k, v)
		if (json_integer_value(json_object_get(v, "code")) / 100 == 2)
			n++;
	return n;
}

/* Right before DATA is sent (pipelined: before the envelope that carries
 * it). The threading record goes in the same commit: replies can only come
 * once the relay may hold the message, which is from here on. -1: not
 * recorded, so not sent (smtp_send stops before DATA; a retry follows). */
static int
mark_sending(void *arg)
{
	struct job_ctx *c = arg;
	struct msgmap m = { .rfc_message_id = c->message_id, .location_id = c->loc->id,
		.ghl_message_id = c->p->message_id, .email_message_id = c->p->email_message_id,
		.contact_id = c->p->contact_id, .conversation_id = c->p->conversation_id,
		.references = c->references, .reply_token = c->reply_token };
	int r = jobs_sending(c->ob->app->store, c->job, &m);

	if (r != 1)
		log_error("outbound: messageId=%s not sent: %s", c->job->message_id, r < 0 ?
		    "the store cannot record the send" : "the job is no longer claimed");
	return r == 1 ? 0 : -1;
}

static void
wake_reporter(struct outbound *ob)
{
	poller_wake(ob->reporters);
}

/* The attempt's engagement events (fsm/engage.h): each finished
 * recipient's, each deferred one's, and, for a message that failed with
 * no recipient's outcome, one for the message. Strings borrowed from c;
 * free the array. */
static struct engage_add *
attempt_events(const struct job_ctx *c, enum job_outcome outcome, enum report_status report, int code,
    size_t *n_r)
{
	size_t n = 0, cap = 2 * json_object_size(c->rcpt_state) + json_array_size(c->temp_rcpts) + 1;
	struct engage_add *ev = xcalloc(cap, sizeof(*ev));
	bool await_dsn = outcome == ATTEMPT_SENT && report == STATUS_NONE;
	const char *addr;
	json_t *v;
	size_t i;

	json_object_foreach(c->rcpt_state, addr, v) {
		enum engage_kind k[2];
		size_t m = engage_on_rcpt((int)json_integer_value(json_object_get(v, "code")), NULL, await_dsn, k);
		for (size_t j = 0; j < m; j++)
			ev[n++] = (struct engage_add){ engage_name(k[j]), addr };
	}
	json_array_foreach(c->temp_rcpts, i, v)
		ev[n++] = (struct engage_add){ engage_name(ENG_TEMPORARY_FAIL), json_string_value(v) };
	if (n == 0 && outcome == ATTEMPT_FAILED)
		ev[n++] = (struct engage_add){ engage_name(code >= 500 ? ENG_REJECTED : ENG_FAILED), "" };
	*n_r = n;
	return ev;
}

/* Ends the attempt in the store; wakes a reporter when a status is due. */
static void
outbound_finish(struct job_ctx *c, enum job_outcome outcome, int64_t next_at, int code, const char *error,
    enum report_status report)
{
	static const char *const outcome_names[] = {
		[ATTEMPT_RETRY] = "retry", [ATTEMPT_SENT] = "sent", [ATTEMPT_FAILED] = "failed",
	};
	static const enum metric outcome_metric[] = {
		[ATTEMPT_RETRY] = M_JOB_RETRIES, [ATTEMPT_SENT] = M_JOB_SENT, [ATTEMPT_FAILED] = M_JOB_FAILED,
	};
	char *rs = json_dumps(c->rcpt_state ? c->rcpt_state : json_object(), JSON_COMPACT);
	/* the relay's last words (e.g. Postfix's queue id) for `trace` */
	const char *said = error ? error : c->reply_text ? c->reply_text : "";
	char *ev = xasprintf("attempt %d: %s <%s>; %d %s", c->job->attempts, outcome_names[outcome],
	    c->message_id ? c->message_id : "-", code, said);
	size_t n_engage = 0;
	/* no events where they cannot go (v2): no rows to write and close */
	struct engage_add *engage = c->job->type && !strcmp(c->job->type, "Email") &&
	    engagement_v3(c->ob->app, c->job->location_id) ? attempt_events(c, outcome, report, code, &n_engage) : NULL;
	struct job_attempt_rec rec = { .next_at = next_at, .code = code, .error = error, .rcpt_state = rs,
		.uncertain = c->uncertain, .event = ev, .engage = engage, .n_engage = n_engage,
		.report_lease_ms = handoff_room(&c->ob->handoff) ? REPORT_LEASE_MS : 0 };
	int r = jobs_attempt(c->ob->app->store, c->job, outcome, report, &rec);

	metrics_inc(outcome_metric[outcome]);
	if (outcome == ATTEMPT_FAILED)
		metrics_location_failure(c->job->location_id, LF_SEND);
	if (r == 1)
		log_info("outbound: messageId=%s locationId=%s state=%s attempt=%d%s%s", c->job->message_id,
		    c->job->location_id, job_state_name(c->job->fsm.job), c->job->attempts, error ? " reason=" : "",
		    error ? error : "");
	else
		/* the job stays claimed or sending in the store: the next start
		 * puts it back in the queue (uncertain if it was sending) */
		log_error("outbound: messageId=%s attempt %d (%s) not recorded: %s; the job stays %s until a restart "
		    "recovers it", c->job->message_id, c->job->attempts, outcome_names[outcome],
		    r < 0 ? "store error" : "the job moved on unexpectedly", job_state_name(c->job->fsm.job));
	free(rs);
	free(ev);
	free(engage);
	if (rec.leased && !handoff_push(&c->ob->handoff, rec.leased)) {
		handoff_return(c->ob->app->store, rec.leased);
		rec.leased = NULL;
	}
	if (r == 1 && rec.report_due) {
		if (!rec.leased)
			atomic_store(&c->ob->reports_in_store, true);
		wake_reporter(c->ob);
	} else if (r == 1 && n_engage > 0)
		engagement_wake(c->ob->app->engagement);
}

static int64_t
retry_at(const struct config *cfg, int attempts)
{
	return now_ms() + backoff_ms(attempts - 1, cfg->retry_base * 1000, cfg->retry_max * 1000);
}

static bool
expired(const struct config *cfg, const struct job *job)
{
	return now_ms() - job->created_at > cfg->max_lifetime * 1000;
}

/* Temporary trouble for the whole message: retry, or fail past lifetime. */
static void
outbound_defer(struct job_ctx *c, int code, const char *why)
{
	const struct config *cfg = c->ob->app->cfg;
	if (expired(cfg, c->job)) {
		char *msg = xasprintf("gave up after %ld s: %s", cfg->max_lifetime, why);
		outbound_finish(c, ATTEMPT_FAILED, 0, code, msg, STATUS_FAILED);
		free(msg);
	} else {
		outbound_finish(c, ATTEMPT_RETRY, retry_at(cfg, c->job->attempts), code, why, STATUS_NONE);
	}
}

static void
record_rcpt(json_t *state, const char *addr, int code, const char *text)
{
	json_t *t = json_string(text ? text : "");
	if (!t)
		t = json_string("(reply not UTF-8)");
	json_object_set_new(state, addr, json_pack("{s:i, s:o}", "code", code, "text", t));
}

/* SMS (and other plugin types): the location's plugin sends it. */
static void
outbound_plugin_send(struct job_ctx *c)
{
	struct loaded_plugin *pl = plugin_host_for(c->ob->app->plugins, c->loc, MB_TYPE_SMS);
	struct mb_outbound j = { c->loc->id, c->p->message_id, c->p->contact_id, c->p->phone, c->p->message,
		(const char *const *)c->p->attachments, c->p->n_attachments };
	char *reason = NULL;

	if (!pl) {
		outbound_finish(c, ATTEMPT_FAILED, 0, 0, "no SMS plugin configured for this location", STATUS_FAILED);
		return;
	}
	switch (plugin_send(c->ob->app->plugins, pl, &j, &reason)) {
	case MB_SEND_DELIVERED:
		outbound_finish(c, ATTEMPT_SENT, 0, 0, NULL, STATUS_DELIVERED);
		break;
	case MB_SEND_ACCEPTED:
		/* the plugin reports delivered / failed when the gateway does */
		outbound_finish(c, ATTEMPT_SENT, 0, 0, "accepted by the gateway; awaiting its report", STATUS_NONE);
		break;
	case MB_SEND_TEMPORARY:
		outbound_defer(c, 0, reason ? reason : "temporary plugin failure");
		break;
	case MB_SEND_PERMANENT:
		outbound_finish(c, ATTEMPT_FAILED, 0, 0, reason ? reason : "refused by the gateway", STATUS_FAILED);
		break;
	}
	free(reason);
}

/* The last attempt ended after our final dot with no reply (a restart, or
 * the relay went away). Before sending again, ask the log of the Postfix
 * beside us ([server] postfix_log) whether it kept the message; if so the
 * attempt succeeded and the job is done. Only when no recipient was
 * accepted before: otherwise the Message-ID is in the log from that
 * earlier attempt. True when the job was finished here. */
static bool
outbound_found_at_relay(struct job_ctx *c)
{
	const struct config *cfg = c->ob->app->cfg;
	const char *mid = c->job->rfc_message_id ? c->job->rfc_message_id : c->message_id;
	const char **rcpts = NULL;
	char *qid = NULL, *said;
	size_t n;
	int r;

	if (!cfg->postfix_log || count_accepted(c->rcpt_state) > 0)
		return false;
	r = relaylog_find(cfg->postfix_log, mid, c->return_path, &qid);
	if (r < 0) {
		log_warn("outbound: messageId=%s cannot read postfix_log %s (%s); sending again", c->job->message_id,
		    cfg->postfix_log, strerror(errno));
		return false;
	}
	if (r == 0) {
		log_info("outbound: messageId=%s was interrupted after DATA and is not in the relay's log; "
		    "sending again", c->job->message_id);
		return false;
	}
	log_info("outbound: messageId=%s was interrupted after DATA; the relay's log shows it queued as %s: "
	    "not sent again", c->job->message_id, qid);
	said = xasprintf("queued as %s (found in the relay's log after an interrupted attempt; not sent again)", qid);
	n = outbound_rcpts(c, &rcpts);
	for (size_t i = 0; i < n; i++)
		record_rcpt(c->rcpt_state, rcpts[i], 250, said);
	c->reply_text = said;
	/* the attempt asked Postfix (which offers DSN) for delivery notices */
	if (c->loc->delivered_on == DELIVERED_ON_DSN) {
		char *why = xasprintf("relayed; awaiting DSN; %s", said);
		outbound_finish(c, ATTEMPT_SENT, 0, 250, why, STATUS_NONE);
		free(why);
	} else
		outbound_finish(c, ATTEMPT_SENT, 0, 250, NULL, STATUS_DELIVERED);
	c->reply_text = NULL;
	free(rcpts);
	free(said);
	free(qid);
	return true;
}

static void
outbound_process(struct outbound *ob, struct job *job, struct smtp_conn **conn)
{
	struct app *app = ob->app;
	struct job_ctx c = { .ob = ob, .job = job };
	struct smtp_params sp;
	struct smtp_envelope env = { 0 };
	struct smtp_result res;
	const char **rcpts = NULL;
	char *msg = NULL, *err = NULL;
	size_t len, n_rcpts, n_temp = 0;
	enum fetch_result fr;
	int first_perm_code = 0;
	char *first_perm = NULL, *last_temp = NULL;
	int last_temp_code = 0;

	if (store_job_payload(app->store, job) != 1) {
		/* a store error, not the message's fault: try again later */
		outbound_finish(&c, ATTEMPT_RETRY, retry_at(app->cfg, job->attempts), 0,
		    "cannot read the stored payload", STATUS_NONE);
		goto out;
	}
	if (outbound_prepare(&c, app) < 0) {
		outbound_finish(&c, ATTEMPT_FAILED, 0, 0, c.p ? "location is no longer configured" :
		    "stored payload no longer validates", STATUS_FAILED);
		goto out;
	}
	if (c.p->kind != PAYLOAD_EMAIL) {
		outbound_plugin_send(&c);
		goto out;
	}
	if (job->uncertain && outbound_found_at_relay(&c))
		goto out;
	smtp_params_for(c.loc, &sp);
	/* the relay's SIZE, once a connection to it has told us */
	fr = outbound_fetch(&c, app->cfg, *conn && smtp_conn_matches(*conn, &sp) ? smtp_conn_max_size(*conn) : 0, &err);
	if (fr == FETCH_PERM) {
		outbound_finish(&c, ATTEMPT_FAILED, 0, 0, err, STATUS_FAILED);
		goto out;
	} else if (fr == FETCH_TEMP) {
		outbound_defer(&c, 0, err);
		goto out;
	}
	msg = outbound_render(&c, &len);

	n_rcpts = outbound_rcpts(&c, &rcpts);
	env.mail_from = c.return_path;
	env.rcpts = rcpts;
	env.n_rcpts = n_rcpts;
	env.envid = c.p->message_id;
	env.dsn = c.loc->delivered_on == DELIVERED_ON_DSN;
	if (n_rcpts > 0) {
		int64_t t0 = mono_us();
		smtp_send(conn, &sp, &env, msg, len, mark_sending, &c, &res);
		metrics_observe(H_SMTP_TRANSACTION, mono_us() - t0);
		for (size_t i = 0; i < n_rcpts; i++) {
			const struct smtp_reply *reply;
			enum smtp_outcome o = smtp_policy_rcpt(&res, i, &reply);
			metrics_inc(reply->code >= 500 ? M_SMTP_5XX : reply->code >= 400 ? M_SMTP_4XX :
			    reply->code >= 200 ? M_SMTP_2XX : M_SMTP_NO_REPLY);
			if (o == SMTP_OUT_TEMP) {
				n_temp++;
				free(last_temp);
				last_temp = xasprintf("%s: %s", rcpts[i], reply->text ? reply->text : "no reply");
				last_temp_code = reply->code;
				if (!c.temp_rcpts)
					c.temp_rcpts = json_array();
				json_array_append_new(c.temp_rcpts, json_string(rcpts[i]));
				continue;
			}
			record_rcpt(c.rcpt_state, rcpts[i], reply->code, reply->text);
			if (o == SMTP_OUT_PERM && !first_perm) {
				first_perm = xasprintf("%s: %d %s", rcpts[i], reply->code, reply->text ? reply->text : "");
				first_perm_code = reply->code;
			}
		}
		log_debug("outbound: messageId=%s smtp stage=%s code=%d reused=%d", job->message_id,
		    smtp_state_name(res.failed_at), res.reply.code, res.reused);
	} else {
		memset(&res, 0, sizeof(res));
	}

	if (n_temp > 0) {
		/* the dot went out and no reply came: the relay may have kept it */
		c.uncertain = res.failed_at == SMTP_BODY && res.reply.code == 0;
		outbound_defer(&c, last_temp_code, last_temp);
	} else {
		size_t n_sent = count_accepted(c.rcpt_state);
		c.reply_text = res.reply.text;
		if (n_sent > 0) {
			/* delivered_on = dsn: the status comes with the DSN */
			bool await_dsn = env.dsn && res.dsn_offered;
			outbound_finish(&c, ATTEMPT_SENT, 0, res.reply.code, first_perm ? first_perm :
			    (await_dsn ? "relayed; awaiting DSN" : NULL), await_dsn ? STATUS_NONE : STATUS_DELIVERED);
		} else {
			outbound_finish(&c, ATTEMPT_FAILED, 0, first_perm_code, first_perm ? first_perm :
			    "no recipients", STATUS_FAILED);
		}
	}
	smtp_result_clear(&res);
out:
	free(first_perm);
	free(last_temp);
	free(rcpts);
	free(msg);
	free(err);
	job_ctx_clear(&c);
}

/* Claims up to claim_batch due jobs: the oldest is the caller's, the rest
 * wait in ob->claimed for the other senders (woken). 1, 0 none due, -1. */
static int
outbound_claim(struct outbound *ob, struct job **job_r)
{
	struct job **jobs;
	int n = jobs_claim_batch(ob->app->store, now_ms(), ob->claim_batch, &jobs);

	if (n < 1)
		return n;
	*job_r = jobs[0];
	for (int i = 1; i < n; i++)
		if (!handoff_push(&ob->claimed, jobs[i]))
			claimed_return(ob->app->store, jobs[i]);
	free(jobs);
	if (n > 1)
		poller_wake(ob->senders);
	return 1;
}

/* A sender's step: one due job, or how long until the next. The
 * thread's slot keeps its SMTP connection between jobs. */
static int64_t
outbound_send_step(void *arg, void **slot)
{
	struct outbound *ob = arg;
	struct job *job = handoff_pop(&ob->claimed);

	if (job || outbound_claim(ob, &job) == 1) {
		outbound_process(ob, job, (struct smtp_conn **)slot);
		store_job_free(job);
		return 0;
	}
	return poller_until(jobs_next_due(ob->app->store), OUTBOUND_IDLE_POLL_MS);
}

static void
outbound_send_fini(void *arg, void *slot)
{
	(void)arg;
	smtp_conn_close(slot);
}

/* HighLevel's error object wants short printable text. */
static char *
report_text(const char *s)
{
	char *t = xstrdup(s ? s : "delivery failed");
	for (char *p = t; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			*p = '?';
	if (strlen(t) > 500)
		t[500] = '\0';
	return t;
}

/* A reporter's posts that ended, not yet recorded (its poller slot). A
 * post's end is one write; a burst's are written a few in one commit,
 * which on PostgreSQL is one round trip for them all. They are written
 * when the batch is full, when no report is due (in memory or in the
 * store), and before a post once the oldest has waited REPORT_BATCH_MS
 * (measured: 2,000 ends in about 600 writes under burst): a post takes at most
 * the HighLevel timeout, and the lease (REPORT_LEASE_MS) covers that. A
 * crash before the write posts them again once their lease ends, as it
 * did between a post and its write. */
struct report_batch {
	struct job *jobs[REPORT_BATCH];
	struct report_end end[REPORT_BATCH];
	size_t n;
	int64_t oldest;            /* mono_ms when the first was kept */
	bool due_in_store;         /* a flush made a newer status due: claim it now */
};

/* A reporter's poller slot: its batch, and when it next asks the store
 * for due reports. The senders hand most reports over in memory; the
 * store holds the rest (DSNs' statuses, retries, a full hand-off, the
 * last run's). Asking it each time the hand-off ran dry was an empty
 * claim, a statement, for about every other report in a burst; it is
 * now asked at most every REPORT_IDLE_POLL_MS, and at once when a sender
 * left a report there (reports_in_store) or a flush made a newer status
 * due (due_in_store). */
struct reporter {
	struct report_batch batch;
	int64_t store_at;          /* mono_ms */
};

/* Records the ends kept: 0 for one (a new status came meanwhile: it goes
 * next) and -1 (the lease runs out and the report is claimed again) are
 * logged. */
static void
report_flush(struct store *st, struct report_batch *b)
{
	int r[REPORT_BATCH];

	if (b->n == 0)
		return;
	jobs_report_many(st, b->jobs, b->end, b->n, r);
	for (size_t i = 0; i < b->n; i++) {
		struct job *job = b->jobs[i];
		/* the status the post carried (logged only where nothing was written) */
		const char *posted = job_report_status_name(job->fsm.status);

		/* a DSN came while the older status was posted: the newer one
		 * goes now, after it (jobs_dsn left the lease alone so they
		 * cannot race) */
		if (r[i] == 0 && store_report_defer(st, job->id, now_ms()) == 1) {
			b->due_in_store = true;
			log_info("report: messageId=%s a new status came while %s was posted: it goes next",
			    job->message_id, posted);
		} else if (r[i] == 0)
			log_warn("report: messageId=%s moved on while %s was posted, and was not rescheduled (gone, or "
			    "a store error): a pending report goes once its lease ends", job->message_id, posted);
		else if (r[i] < 0)
			log_error("report: messageId=%s the store cannot record the post of %s: it is tried again "
			    "once its lease ends", job->message_id, posted);
		free((char *)b->end[i].error);
		store_job_free(job);
	}
	b->n = 0;
}

/* Keeps the post's end of job (taken) for the next write. */
static void
report_done(struct store *st, struct report_batch *b, struct job *job, enum report_outcome o, int64_t next_at,
    const char *error)
{
	if (b->n == REPORT_BATCH)
		report_flush(st, b);
	if (b->n == 0)
		b->oldest = mono_ms();
	b->jobs[b->n] = job;
	b->end[b->n] = (struct report_end){ o, next_at, error ? xstrdup(error) : NULL };
	b->n++;
}

/* Each recipient's outcome, from what the relay answered and what DSNs
 * said ({"addr": {"code", "text", "dsn"}}); n returned, *out malloc'd, the
 * strings borrowed from rs (alive while rs is). */
static size_t
report_recipients(json_t *rs, const char *overall, bool await_dsn, struct ghl_recipient **out)
{
	const char *addr;
	json_t *v;
	size_t n = 0;

	*out = xcalloc(json_object_size(rs) + 1, sizeof(**out));
	json_object_foreach(rs, addr, v) {
		const char *dsn = json_string_value(json_object_get(v, "dsn"));
		const char *text = json_string_value(json_object_get(v, "text"));
		int code = (int)json_integer_value(json_object_get(v, "code"));
		struct ghl_recipient *r = &(*out)[n++];
		r->email = addr;
		if (dsn && !strncmp(dsn, "failed", 6))
			r->status = "failed";
		else if (dsn && (!strncmp(dsn, "delivered", 9) || !strncmp(dsn, "relayed", 7) || !strncmp(dsn, "expanded", 8)))
			r->status = "delivered";
		else if (code >= 500 || (code >= 400 && !strcmp(overall, "failed")))
			r->status = "failed";
		else if (code >= 200 && code < 300)
			r->status = await_dsn || dsn ? "sent" : "delivered";
		else
			r->status = "pending";
		if (!strcmp(r->status, "failed"))
			r->fail_reason = text && *text ? text : "delivery failed";
	}
	return n;
}

/* v3 for an email, when this location has it (engagement.h): 1 posted
 * (res filled), 0 not tried or not there (the caller posts v2). The
 * message's due engagement events go in the same call: *b_r holds them,
 * for the caller to mark. */
static int
report_v3(struct outbound *ob, struct job *job, const char *status, struct ghl_result *res,
    struct engage_batch **b_r)
{
	struct app *app = ob->app;
	const struct location_config *loc = config_location(app->cfg, job->location_id);
	struct ghl_event_count *ev = NULL;
	struct ghl_recipient *rcpts;
	size_t n, n_ev = 0;
	json_t *rs;

	*b_r = NULL;
	if (strcmp(job->type, "Email") || !engagement_v3(app, job->location_id))
		return 0;
	rs = job->rcpt_state ? json_loads(job->rcpt_state, 0, NULL) : NULL;
	if (!rs)
		rs = json_object();
	n = report_recipients(rs, status, loc && loc->delivered_on == DELIVERED_ON_DSN, &rcpts);
	if (store_engage_claim_message(app->store, job->message_id, now_ms(), REPORT_LEASE_MS, b_r) == 1)
		engagement_counters(*b_r, &ev, &n_ev, NULL);
	ghl_update_email_status(app->ghl, job->location_id, job->message_id, status, rcpts, n, ev, n_ev, res);
	free(rcpts);
	free(ev);
	json_decref(rs);
	if (engagement_v3_missing(app, job->location_id, res)) {
		ghl_result_clear(res);
		return 0;
	}
	return 1;
}

/* The events that went with a report: taken, or free for the next call. */
static void
report_events_done(struct store *st, struct engage_batch *b, bool taken)
{
	if (!b)
		return;
	if ((taken ? store_engage_done(st, b, NULL) : store_engage_later(st, b, 0, NULL)) < 0)
		log_error("report: messageId=%s its events' outcome is not recorded (store error): they go again when "
		    "their lease ends", b->message_id);
	store_engage_batch_free(b);
}

/* Posts job's status (job taken: kept in b for the write, or freed). */
static void
report_one(struct outbound *ob, struct report_batch *b, struct job *job)
{
	struct store *st = ob->app->store;
	struct ghl_result res;
	struct engage_batch *events = NULL;
	char code[16], *text = NULL;
	bool failed = job->fsm.status == STATUS_FAILED;
	const char *status = job_report_status_name(job->fsm.status);
	int64_t d;

	if (!status) {
		/* a pending report always has a status: only a damaged row has none */
		log_error("report: messageId=%s pending without a status: dropped", job->message_id);
		report_done(st, b, job, REPORT_STOP, 0, "no status to report");
		return;
	}
	snprintf(code, sizeof(code), "%d", job->last_code);
	if (failed)
		text = report_text(job->last_error);
	if (report_v3(ob, job, status, &res, &events) == 0) {
		report_events_done(st, events, false);
		events = NULL;
		ghl_update_status(ob->app->ghl, job->location_id, job->message_id, status,
		    failed ? code : NULL, text, job->email_message_id, &res);
	}
	switch (engagement_next(&res, job->report_attempts, REPORT_MAX_ATTEMPTS, REPORT_BASE_MS, REPORT_MAX_MS, &d)) {
	case GHL_NEXT_DEFER:
		if (jobs_report_defer(st, job, now_ms() + d) < 0)
			log_error("report: messageId=%s cannot defer (store error for a minute): it is tried again "
			    "once its lease ends", job->message_id);
		else if (store_report_defer_location(st, job->location_id, now_ms(), now_ms() + d) < 0)
			log_error("report: locationId=%s cannot defer its other due reports (store error): each is "
			    "claimed and put back on its own", job->location_id);
		store_job_free(job);
		break;
	case GHL_NEXT_DONE:
		metrics_inc(M_REPORT_POSTED);
		log_info("report: messageId=%s status=%s posted traceId=%s", job->message_id, status,
		    res.trace_id ? res.trace_id : "-");
		report_done(st, b, job, REPORT_POSTED, 0, NULL);
		break;
	case GHL_NEXT_LATER:
		metrics_inc(M_REPORT_RETRY);
		log_debug("report: messageId=%s retry in %lld ms: %s", job->message_id, (long long)d,
		    res.error ? res.error : "?");
		report_done(st, b, job, REPORT_LATER, now_ms() + d, res.error);
		break;
	case GHL_NEXT_STOP:
		metrics_inc(M_REPORT_GAVE_UP);
		metrics_location_failure(job->location_id, LF_REPORT);
		if (res.cls == GHL_PERMANENT)
			log_error("report: messageId=%s refused status=%ld: %s traceId=%s", job->message_id, res.status,
			    res.error ? res.error : "?", res.trace_id ? res.trace_id : "-");
		else
			log_error("report: messageId=%s gave up after %d attempts: %s", job->message_id,
			    job->report_attempts, res.error ? res.error : "?");
		report_done(st, b, job, REPORT_STOP, 0, res.error);
		break;
	}
	report_events_done(st, events, res.cls == GHL_OK && !res.throttled);
	ghl_result_clear(&res);
	free(text);
}

/* A reporter's step: one due report, from the hand-off or, when it is
 * time (struct reporter), the store; the posts' ends it keeps are written
 * as report_batch says. */
static int64_t
outbound_report_step(void *arg, void **slot)
{
	struct outbound *ob = arg;
	struct store *st = ob->app->store;
	struct reporter *rp = *slot ? *slot : (*slot = xcalloc(1, sizeof(*rp)));
	struct report_batch *b = &rp->batch;
	struct job *job = handoff_pop(&ob->handoff);
	int64_t now = mono_ms();

	if (b->n > 0 && now - b->oldest >= REPORT_BATCH_MS)
		report_flush(st, b);
	if (!job && (now >= rp->store_at || b->due_in_store || atomic_exchange(&ob->reports_in_store, false))) {
		b->due_in_store = false;
		if (store_report_claim(st, now_ms(), REPORT_LEASE_MS, &job) != 1)
			rp->store_at = now + REPORT_IDLE_POLL_MS;
	}
	if (job) {
		report_one(ob, b, job);
		return 0;
	}
	report_flush(st, b);
	return b->due_in_store ? 0 : rp->store_at > now ? rp->store_at - now : 1;
}

static void
outbound_report_fini(void *arg, void *slot)
{
	struct outbound *ob = arg;

	if (slot)
		report_flush(ob->app->store, &((struct reporter *)slot)->batch);
	free(slot);
}

/* Sending and reporting yield to webhook intake (OUTBOUND_NICE): a 200
 * waits on the intake thread getting a core, while a message sent a
 * millisecond later costs nothing. */
struct outbound *
outbound_start(struct app *app, int workers, int reporters)
{
	struct outbound *ob = xcalloc(1, sizeof(*ob));
	struct poller_params send = { .name = "outbound", .threads = workers, .max_wait_ms = OUTBOUND_IDLE_POLL_MS,
		.nice = OUTBOUND_NICE, .step = outbound_send_step, .fini = outbound_send_fini, .ctx = ob };
	struct poller_params report = { .name = "report", .threads = reporters, .max_wait_ms = REPORT_IDLE_POLL_MS,
		.nice = OUTBOUND_NICE, .step = outbound_report_step, .fini = outbound_report_fini, .ctx = ob };

	ob->app = app;
	ob->claim_batch = workers < 1 ? 1 : workers > CLAIM_BATCH_MAX ? CLAIM_BATCH_MAX : workers;
	pthread_mutex_init(&ob->handoff.lock, NULL);
	pthread_mutex_init(&ob->claimed.lock, NULL);
	ob->parsed = payload_cache_new(PARSED_MAX, PARSED_MAX_BYTES, PARSED_TTL_MS);
	ob->senders = poller_start(&send);
	ob->reporters = poller_start(&report);
	return ob;
}

void
outbound_wake(struct outbound *ob)
{
	poller_wake(ob->senders);
}

bool
outbound_keep_parsed(struct outbound *ob, const char *body, size_t len, struct payload *p)
{
	return ob && payload_cache_put(ob->parsed, p->message_id, body, len, p, mono_ms());
}

void
outbound_forget_parsed(struct outbound *ob, const char *message_id, const char *body, size_t len)
{
	if (ob)
		payload_free(payload_cache_take(ob->parsed, message_id, body, len, mono_ms()));
}

void
outbound_stop(struct outbound *ob)
{
	struct job *job;

	if (!ob)
		return;
	poller_stop(ob->senders);
	poller_stop(ob->reporters);
	while ((job = handoff_pop(&ob->claimed)) != NULL)
		claimed_return(ob->app->store, job);
	while ((job = handoff_pop(&ob->handoff)) != NULL)
		handoff_return(ob->app->store, job);
	pthread_mutex_destroy(&ob->claimed.lock);
	pthread_mutex_destroy(&ob->handoff.lock);
	payload_cache_free(ob->parsed);
	free(ob);
}

int
outbound_send_test(struct app *app, const struct location_config *loc, const char *to, FILE *out)
{
	struct addr from = { loc->from_name, loc->from_addr };
	struct addr rcpt = { NULL, (char *)to };
	struct smtp_params sp;
	struct smtp_envelope env = { 0 };
	struct smtp_result res;
	struct smtp_conn *conn = NULL;
	char *mid = xasprintf("mb.test.%016llx@%s", (unsigned long long)random_u64(), loc->reply_domain);
	char *text = xasprintf("This is a test message from mailbridge for location %s.\n"
	    "If you can read it, the relay %s:%ld accepts our mail.\n", loc->id, loc->smtp.host, loc->smtp.port);
	struct mime_out m = { .from = &from, .to = &rcpt, .n_to = 1, .subject = "mailbridge test message",
		.text = text, .message_id = mid, .date_ms = now_ms() };
	const char *rcpts[1] = { to };
	size_t len;
	char *msg;
	int r;

	if (!smtp_address_ok(to)) {
		fprintf(out, "not a valid address: %s\n", to);
		free(mid);
		free(text);
		return -1;
	}
	msg = mime_out_render(&m, &len);
	smtp_params_for(loc, &sp);
	env.mail_from = loc->from_addr;
	env.rcpts = rcpts;
	env.n_rcpts = 1;
	r = smtp_send(&conn, &sp, &env, msg, len, NULL, NULL, &res);
	fprintf(out, "relay      %s:%ld (tls=%s, verify=%s, auth=%s)\n", loc->smtp.host, loc->smtp.port,
	    loc->smtp.tls, loc->smtp.tls_verify ? "yes" : "no", loc->smtp.user ? "yes" : "no");
	fprintf(out, "stopped at %s\n", smtp_state_name(res.failed_at));
	fprintf(out, "rcpt       %s: %d %s\n", to, res.rcpt[0].code, res.rcpt[0].text ? res.rcpt[0].text : "");
	fprintf(out, "reply      %d %s\n", res.reply.code, res.reply.text ? res.reply.text : "");
	fprintf(out, "dsn        %s\n", res.dsn_offered ? "offered" : "not offered");
	fprintf(out, "result     %s\n", r == 0 ? "accepted" : "NOT accepted");
	smtp_result_clear(&res);
	smtp_conn_close(conn);
	free(msg);
	free(mid);
	free(text);
	return r;
}

static int
probe_stop(void *arg)
{
	(void)arg;
	return -1;      /* never DATA: the probe sends nothing */
}

int
outbound_probe_relay(const struct location_config *loc, char **detail_r)
{
	const char *rcpts[1] = { loc->from_addr };
	struct smtp_envelope env = { .mail_from = loc->from_addr, .rcpts = rcpts, .n_rcpts = 1 };
	struct smtp_params sp;
	struct smtp_result res;
	struct smtp_conn *conn = NULL;
	int ok;

	smtp_params_for(loc, &sp);
	(void)smtp_send(&conn, &sp, &env, "", 0, probe_stop, NULL, &res);
	/* stopped by us before DATA: connected, TLS as configured, AUTH accepted */
	ok = res.aborted;
	if (ok)
		*detail_r = xasprintf("%s:%ld answers; TLS %s%s; AUTH %s; DSN %s; nothing was sent", loc->smtp.host,
		    loc->smtp.port, loc->smtp.tls_mode == TLS_MODE_NONE ? "off" : "on",
		    loc->smtp.tls_mode == TLS_MODE_NONE ? "" : loc->smtp.tls_verify ? " (certificate verified)" :
		    " (certificate NOT verified: smtp_tls_verify = no)", loc->smtp.user ? "accepted" : "not used",
		    res.dsn_offered ? "offered" : "not offered");
	else
		*detail_r = xasprintf("%s:%ld: stopped at %s: %d %s", loc->smtp.host, loc->smtp.port,
		    smtp_state_name(res.failed_at), res.reply.code, res.reply.text ? res.reply.text : "");
	smtp_result_clear(&res);
	smtp_conn_close(conn);
	return ok ? 0 : -1;
}
