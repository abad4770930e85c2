/* outbound: the sender pool. Worker threads claim due Email jobs from the
 * store, render them (mime_out), send them (smtp_client) on a connection
 * each worker keeps per relay, classify the replies (smtp_policy) and
 * record the outcome; reporter threads post the resulting status to
 * HighLevel (ghl) with their own retries, so a slow or refusing status
 * call never holds up sending. */
#ifndef MB_OUTBOUND_H
#define MB_OUTBOUND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct app;
struct payload;
struct outbound;
struct location_config;

struct outbound *outbound_start(struct app *app, int workers, int reporters);
/* A job was queued: wake a worker now instead of at its next poll. */
void outbound_wake(struct outbound *ob);
/* A webhook's parsed payload and the body it came from, given before the
 * job is stored: kept for the sender that claims the job (true: p is now
 * outbound's, and the caller must not touch it again), so that it is not
 * parsed twice; false: still the caller's. forget: the body was not
 * stored as a new job (a duplicate, a store error). See payload_cache. */
bool outbound_keep_parsed(struct outbound *ob, const char *body, size_t len, struct payload *p);
void outbound_forget_parsed(struct outbound *ob, const char *message_id, const char *body, size_t len);
/* Finishes the jobs in hand (each bounded by SMTP timeouts), then stops. */
void outbound_stop(struct outbound *ob);

/* send-test: renders a test message and sends it through the location's
 * relay now, printing a transcript summary to out. 0 if accepted. */
int outbound_send_test(struct app *app, const struct location_config *loc, const char *to, FILE *out);
/* doctor: connects to the location's relay as a send would (TLS and its
 * checks, AUTH) and stops before DATA, so nothing is sent. 0 or -1, with
 * what was found in *detail_r (malloc'd) either way. */
int outbound_probe_relay(const struct location_config *loc, char **detail_r);

#endif
