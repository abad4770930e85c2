/* store_events: the message journey (trace events) and retention. */
#ifndef MB_STORE_EVENTS_H
#define MB_STORE_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Message journey: one row per event (webhook, smtp, status, dsn, reply,
 * inbound), with its location, kept [store] events_days; written by the
 * store in the commit of the change it records. */
/* A location's newest events, newest first, at most limit. Returns how
 * many, or -1. */
int store_events_recent(struct store *st, const char *location_id, int limit, void (*fn)(int64_t at,
    const char *message_id, const char *kind, const char *detail, void *arg), void *arg);
/* Events for a HighLevel messageId, an RFC Message-ID (no <>), or an
 * email address / phone number, oldest first. Returns how many. */
int store_events_each(struct store *st, const char *key, void (*fn)(int64_t at, const char *message_id,
    const char *kind, const char *detail, void *arg), void *arg);

/* Retention: forgets finished work so the store stays the size of its
 * window. Payloads of sent jobs go at once; finished jobs and the webhook
 * and inbound dedupe records created before keep_before; Message-ID map
 * entries (reply threading) before threads_before; events before
 * events_before (ms since the epoch). Never a queued or in-flight job, nor
 * one whose status is still to be reported. Runs in small batches, so it
 * can run beside the daemon's work. 0, or -1 on a store error. */
struct store_pruned {
	int64_t payloads, jobs, webhooks, inbound, threads, engagement, events, replays;
};
int store_prune(struct store *st, int64_t keep_before, int64_t threads_before, int64_t events_before,
    int64_t replays_before, struct store_pruned *r);

#endif
