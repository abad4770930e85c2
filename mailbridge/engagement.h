/* engagement: reports an email's engagement events (fsm/engage.h) to
 * HighLevel through the v3 email status, each once, from the store's
 * outbox (store_engage.h).
 *
 * A message's events travel with its status report when one is due (the
 * reporter takes them: one call, not two); the rest (a reply, an open, a
 * click, an unsubscribe, a complaint, a delay) go from this module's
 * poster, which leaves alone a message whose status report is pending, so
 * the status that call sets never overtakes the report's. Retries, the
 * 403 window, our rate limiter and re-installs are handled as for
 * statuses. Under v2 (status_api = v2, or a location whose HighLevel has
 * no v3) there is no place for events: they are marked given up, and the
 * log says so once per batch.
 *
 * This module also owns the choice between v3 and v2 per location
 * ([highlevel] status_api = auto|v3|v2; auto remembers a 404/405). */
#ifndef MB_ENGAGEMENT_H
#define MB_ENGAGEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ghl.h"

struct app;
struct engagement;
struct engage_batch;

struct engagement *engagement_start(struct app *app);
void engagement_wake(struct engagement *e);     /* NULL: nothing */
void engagement_stop(struct engagement *e);

/* True when this location's email statuses go through v3. */
bool engagement_v3(struct app *app, const char *location_id);
/* After a v3 call: on a 404/405 under auto, remembers v2 for the location
 * and returns true (the caller falls back); else false. */
bool engagement_v3_missing(struct app *app, const char *location_id, const struct ghl_result *res);

/* A batch's events as counters for ghl_update_email_status (names
 * static; free *ev). has (ENG_KIND_N entries, or NULL) gets which kinds
 * are there. */
void engagement_counters(const struct engage_batch *b, struct ghl_event_count **ev, size_t *n_ev, bool *has);

/* What to do after a HighLevel call that was attempt `attempts` of a
 * report (a status, events, a DND): the shared rules. */
enum ghl_next {
	GHL_NEXT_DONE,             /* taken */
	GHL_NEXT_DEFER,            /* our limiter held it: again after *delay_ms, not counted */
	GHL_NEXT_LATER,            /* again after *delay_ms */
	GHL_NEXT_STOP,             /* refused, or too many attempts: give up */
};
enum ghl_next engagement_next(const struct ghl_result *res, int attempts, int max_attempts, int64_t base_ms,
    int64_t max_ms, int64_t *delay_ms);

#endif
