#include "mailboxes.h"
#include "app.h"
#include "config.h"
#include "imap_session.h"
#include "imap_watch.h"
#include "inbound.h"
#include "inbound_queue.h"
#include "log.h"
#include "metrics.h"
#include "store_inbound.h"
#include "store_instances.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

/* A mailbox handed to another instance stays nobody's this long, so that
 * our reader has stopped before theirs starts. */
#define HANDOVER_GRACE_MS 5000

struct mailboxes {
	struct app *app;
	struct imap_mailbox *boxes;
	size_t n;
	struct imap_sink sink;
	struct inbound_queue *queue;   /* the posters; NULL when none run */
	/* On a shared store, each mailbox is read by the one instance that
	 * holds its lease "mailbox:<location>" (mailboxes_balance). */
	bool shared;
	pthread_mutex_t lock;          /* held[], renewed_at */
	bool *held;
	int64_t renewed_at;            /* mono ms of the last renewal that worked */
	/* the boxes by id, sorted: the watcher asks per step, the leases per
	 * heartbeat, and there may be thousands */
	struct box_ref { const char *id; size_t i; } *by_id;
};

static int
box_ref_cmp(const void *a, const void *b)
{
	return strcmp(((const struct box_ref *)a)->id, ((const struct box_ref *)b)->id);
}

/* The box named id: its index, or -1. */
static ssize_t
box_find(const struct mailboxes *mb, const char *id)
{
	struct box_ref key = { id, 0 }, *r = bsearch(&key, mb->by_id, mb->n, sizeof(*mb->by_id), box_ref_cmp);
	return r ? (ssize_t)r->i : -1;
}

static char *
lease_name(const char *id)
{
	return xasprintf("mailbox:%s", id);
}

/* Ours to read: held, and renewed recently enough that no other instance
 * can have taken it (an instance that cannot reach the store stops). */
static bool
mailbox_ours(struct mailboxes *mb, const char *id)
{
	int64_t lease = store_instance_lease_ms(mb->app->store);
	ssize_t i = box_find(mb, id);
	bool ours = false;

	if (i < 0)
		return false;
	pthread_mutex_lock(&mb->lock);
	ours = mb->held[i] && mono_ms() - mb->renewed_at < lease * 4 / 5;
	pthread_mutex_unlock(&mb->lock);
	return ours;
}


/* On the watcher's worker thread: only into the spool (durable), so the
 * mark may pass it; the posters post it. */
static enum imap_delivery
sink_deliver(void *ctx, const char *id, const char *raw, size_t len)
{
	struct app *app = ((struct mailboxes *)ctx)->app;
	const struct location_config *loc = config_location(app->cfg, id);

	/* past inbound's size limit: never spooled (a reader may return up
	 * to 256 MiB); inbound_handle skips it at once, with its log line */
	if (loc && len > INBOUND_MAX_MESSAGE)
		return inbound_handle(app, loc, raw, len, now_ms(), NULL) == INBOUND_DONE ? IMAP_DELIVERED : IMAP_RETRY;
	if (inbound_queue_put(((struct mailboxes *)ctx)->queue, app, id, raw, len) < 0) {
		log_error("inbound: locationId=%s cannot spool a message (store error): left unread", id);
		return IMAP_RETRY;
	}
	return IMAP_DELIVERED;
}

static int
sink_mark_get(void *ctx, const char *id, struct imap_mark *m)
{
	struct app *app = ((struct mailboxes *)ctx)->app;
	struct imap_checkpoint cp;
	int r = store_checkpoint_get(app->store, id, &cp);

	if (r == 1) {
		m->uidvalidity = cp.uidvalidity;
		m->last_uid = cp.last_uid;
		m->rescan_upto = cp.rescan_upto;
	}
	return r;
}

static int
sink_mark_put(void *ctx, const char *id, const struct imap_mark *m)
{
	struct app *app = ((struct mailboxes *)ctx)->app;
	struct imap_checkpoint cp = { m->uidvalidity, m->last_uid, m->rescan_upto };

	return store_checkpoint_put(app->store, id, &cp) == 1 ? 0 : -1;
}

static void
sink_status(void *ctx, const char *id, const char *state, const char *detail)
{
	struct mailboxes *mb = ctx;
	/* the instance that reads it says how it goes, not one that let go */
	if (mb->shared && !mailbox_ours(mb, id))
		return;
	/* only `accounts` reads it: a failed write is logged by the store */
	(void)store_watcher_state(mb->app->store, id, state, detail);
}

static const char *
sink_paused(void *ctx, const char *id)
{
	struct mailboxes *mb = ctx;

	if (store_is_uninstalled(mb->app->store, id) == 1)
		return "app uninstalled";
	if (mb->shared && !mailbox_ours(mb, id))
		return "another instance watches it";
	return NULL;
}

struct lease_seen {
	struct mailboxes *mb;
	bool *others;              /* per box: a live lease of another instance */
	bool *ours;                /* per box: ours in the store */
};

static void
lease_row(const char *name, const char *owner, void *arg)
{
	struct lease_seen *ls = arg;
	ssize_t i = box_find(ls->mb, name + strlen("mailbox:"));

	if (i < 0)
		return;
	if (strcmp(owner, store_instance_name(ls->mb->app->store)) == 0)
		ls->ours[i] = true;
	else
		ls->others[i] = true;
}

/* Renewed late: while ours were past their time, another instance may
 * have taken some. What the store says is ours is ours, set before the
 * renewal counts (mailbox_ours); then the readers of the rest stop, and
 * those still ours go on (a reader that looked in the gap stopped, and
 * would wait half a minute to look again). A poke costs a reader that
 * did not stop one IDLE round; this is rare. Under mb->lock. */
static size_t
balance_reconcile(struct mailboxes *mb, const bool *ours, bool *was)
{
	size_t mine = 0;

	for (size_t i = 0; i < mb->n; i++) {
		was[i] = mb->held[i];
		mb->held[i] = ours[i];
		mine += ours[i];
	}
	return mine;
}

static void
balance_poke_changed(struct mailboxes *mb, const bool *ours, const bool *was)
{
	for (size_t i = 0; i < mb->n; i++) {
		if (was[i] && !ours[i])
			log_warn("imap: locationId=%s taken over by another instance while our lease was late",
			    mb->boxes[i].id);
		if (was[i] || ours[i])
			imap_watch_poke(mb->app->imap, mb->boxes[i].id);
	}
}

void
mailboxes_balance(struct mailboxes *mb)
{
	struct store *st;
	int64_t lease;
	size_t share, mine = 0;
	struct lease_seen ls = { mb, NULL, NULL };
	int live;
	bool lapsed, seen = true, *was = NULL;

	if (!mb || !mb->shared || mb->n == 0)
		return;
	st = mb->app->store;
	lease = store_instance_lease_ms(st);
	if (store_lease_renew_mine(st, "mailbox:", lease) < 0)
		return;            /* not renewed: ours lapse, and the readers stop (mailbox_ours) */
	/* an equal share each, of the instances beating now */
	live = store_instance_live(st);
	share = (mb->n + (size_t)(live > 0 ? live : 1) - 1) / (size_t)(live > 0 ? live : 1);
	pthread_mutex_lock(&mb->lock);
	lapsed = mb->renewed_at > 0 && mono_ms() - mb->renewed_at >= lease * 4 / 5;
	for (size_t i = 0; i < mb->n; i++)
		mine += mb->held[i];
	pthread_mutex_unlock(&mb->lock);
	/* the store's leases, read only when they are needed: after a late
	 * renewal (which of ours are still ours), or to take free ones (not
	 * those another live instance holds) */
	if (lapsed || mine < share) {
		ls.others = xcalloc(mb->n, sizeof(bool));
		ls.ours = xcalloc(mb->n, sizeof(bool));
		seen = store_lease_each(st, "mailbox:", lease_row, &ls) >= 0;
	}
	pthread_mutex_lock(&mb->lock);
	if (lapsed && seen) {
		was = xcalloc(mb->n, sizeof(bool));
		mine = balance_reconcile(mb, ls.ours, was);
	}
	/* late and the store's view unknown: the readers stay stopped */
	if (!lapsed || seen)
		mb->renewed_at = mono_ms();
	pthread_mutex_unlock(&mb->lock);
	if (was)
		balance_poke_changed(mb, ls.ours, was);
	free(was);
	if (!seen)
		goto out;          /* the others unknown: hand over or take nothing now */
	/* more than our share (an instance joined): hand the last ones over */
	for (size_t i = mb->n; i-- > 0 && mine > share;) {
		char *name;
		if (!mb->held[i])
			continue;
		pthread_mutex_lock(&mb->lock);
		mb->held[i] = false;
		pthread_mutex_unlock(&mb->lock);
		imap_watch_poke(mb->app->imap, mb->boxes[i].id);
		name = lease_name(mb->boxes[i].id);
		if (store_lease_release(st, name, HANDOVER_GRACE_MS) == 1)
			log_info("imap: locationId=%s handed over (%zu mailboxes each for %d instances)", mb->boxes[i].id,
			    share, live);
		free(name);
		mine--;
	}
	/* fewer (at start, or an instance left): take free ones, not those
	 * another live instance holds (ls was read: mine < share) */
	for (size_t i = 0; i < mb->n && mine < share && ls.others; i++) {
		char *name;
		if (mb->held[i] || ls.others[i])
			continue;
		name = lease_name(mb->boxes[i].id);
		if (store_lease_take(st, name, lease) == 1) {
			pthread_mutex_lock(&mb->lock);
			mb->held[i] = true;
			pthread_mutex_unlock(&mb->lock);
			imap_watch_poke(mb->app->imap, mb->boxes[i].id);
			mine++;
		}
		free(name);
	}
out:
	free(ls.others);
	free(ls.ours);
}

void
mailboxes_mailbox_init(struct imap_mailbox *box, const struct config *cfg, const struct location_config *loc)
{
	*box = (struct imap_mailbox){
		.id = loc->id, .host = loc->imap.host, .port = loc->imap.port, .tls = loc->imap.tls_mode,
		.tls_verify = loc->imap.tls_verify, .ca_file = loc->imap.ca_file, .user = loc->imap.user,
		.password = loc->imap.password, .folder = loc->imap_folder, .after = loc->imap_after,
		.idle = loc->imap_idle, .idle_interval = loc->idle_interval, .poll_interval = loc->poll_interval,
		.reread_days = cfg->keep_days,
	};
}

/* GET /metrics: watched and connected mailboxes, and the spool */
static void
mailboxes_write_gauges(void *arg, FILE *out)
{
	struct mailboxes *mb = arg;
	struct imap_watch *w = mb->app->imap;
	fprintf(out, "# HELP mailbridge_imap_mailboxes Watched mailboxes\n# TYPE mailbridge_imap_mailboxes gauge\n"
	    "mailbridge_imap_mailboxes{state=\"configured\"} %zu\nmailbridge_imap_mailboxes{state=\"connected\"} %zu\n",
	    imap_watch_count(w), imap_watch_connected(w));
	fprintf(out, "# HELP mailbridge_inbound_spooled Received messages waiting to be posted\n"
	    "# TYPE mailbridge_inbound_spooled gauge\nmailbridge_inbound_spooled %d\n",
	    store_spool_count(mb->app->store));
}

struct mailboxes *
mailboxes_new(struct app *app)
{
	struct mailboxes *mb = xcalloc(1, sizeof(*mb));
	const struct config *cfg = app->cfg;

	mb->app = app;
	mb->boxes = xcalloc(cfg->n_locations + 1, sizeof(*mb->boxes));
	for (size_t i = 0; i < cfg->n_locations; i++)
		if (cfg->locations[i].imap.host)
			mailboxes_mailbox_init(&mb->boxes[mb->n++], cfg, &cfg->locations[i]);
	mb->sink = (struct imap_sink){ mb, sink_deliver, sink_mark_get, sink_mark_put, sink_status, sink_paused };
	mb->shared = store_is_shared(app->store);
	mb->held = xcalloc(mb->n + 1, sizeof(*mb->held));
	mb->by_id = xcalloc(mb->n + 1, sizeof(*mb->by_id));
	for (size_t i = 0; i < mb->n; i++)
		mb->by_id[i] = (struct box_ref){ mb->boxes[i].id, i };
	qsort(mb->by_id, mb->n, sizeof(*mb->by_id), box_ref_cmp);
	pthread_mutex_init(&mb->lock, NULL);
	return mb;
}

const struct imap_sink *
mailboxes_sink(const struct mailboxes *mb)
{
	return &mb->sink;
}

struct mailboxes *
mailboxes_start(struct app *app, int posters, int imap_workers)
{
	struct mailboxes *mb = mailboxes_new(app);

	/* the posters first: the spool may hold mail from before */
	mb->queue = inbound_queue_start(app, posters);
	/* our share of the mailboxes before the first login (a shared store) */
	mailboxes_balance(mb);
	app->imap = imap_watch_start(mb->boxes, mb->n, &mb->sink, imap_workers, (int)app->cfg->imap_connect_rate);
	metrics_gauge_add(mailboxes_write_gauges, mb);
	return mb;
}

void
mailboxes_stop(struct mailboxes *mb)
{
	if (!mb)
		return;
	imap_watch_stop(mb->app->imap);
	mb->app->imap = NULL;
	/* after the readers: nothing is put once the posters are gone */
	inbound_queue_stop(mb->queue);
	/* the others may take them at once (instance_stop drops our leases) */
	free(mb->held);
	free(mb->by_id);
	pthread_mutex_destroy(&mb->lock);
	free(mb->boxes);
	free(mb);
}

/* The probe's sink: the mailbox counts as never read, and no mark is kept
 * (the watcher's own marks in the store are not touched). */
static int
probe_mark_get(void *ctx, const char *id, struct imap_mark *m)
{
	(void)ctx;
	(void)id;
	(void)m;
	return 0;
}

static int
probe_mark_put(void *ctx, const char *id, const struct imap_mark *m)
{
	(void)ctx;
	(void)id;
	(void)m;
	return 0;
}

int
mailboxes_probe(const struct config *cfg, const struct location_config *loc, bool *idle_r, char **detail_r)
{
	static const struct imap_sink sink = { .mark_get = probe_mark_get, .mark_put = probe_mark_put };
	struct imap_mailbox box;
	struct imap_session s = { 0 };
	char *err = NULL;

	mailboxes_mailbox_init(&box, cfg, loc);
	box.idle = true;           /* ask whether it is offered, whatever imap_idle says */
	s.mb = &box;
	s.sink = &sink;
	if (imap_session_connect(&s, &err) < 0) {
		*detail_r = xasprintf("%s:%ld: %s", loc->imap.host, loc->imap.port, err ? err : "cannot connect");
		free(err);
		return -1;
	}
	*idle_r = s.has_idle;
	*detail_r = xasprintf("%s:%ld: logged in as %s, %s selected, IDLE %s", loc->imap.host, loc->imap.port,
	    loc->imap.user, loc->imap_folder, s.has_idle ? "offered" : "not offered (mailbridge polls)");
	imap_session_close(&s, true);
	return 0;
}
