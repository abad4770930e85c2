/* inbound_queue: received mail waits here between the reader that took
 * it (an IMAP watcher thread) and the core that handles it. The reader
 * puts the message in the store's spool, durably, and goes back to its
 * mailbox; posters (threads of the core) take spooled messages and hand
 * them to inbound_handle, so a slow HighLevel never holds a mailbox
 * reader. A message HighLevel cannot take now waits in the spool with a
 * growing delay; after a crash every spooled message is handled again
 * (the dedupe records make that safe). */
#ifndef MB_INBOUND_QUEUE_H
#define MB_INBOUND_QUEUE_H

#include <stddef.h>

struct app;
struct inbound_queue;

/* Starts posters threads over app's store (spool left by an earlier
 * run included). */
struct inbound_queue *inbound_queue_start(struct app *app, int posters);
/* Waits for the posters to finish the message each has, then frees. */
void inbound_queue_stop(struct inbound_queue *q);

/* Spools one message of location_id (durable before it returns) and
 * wakes a poster; q may be NULL (nothing running: it waits in the spool).
 * 0, or -1 when the store cannot take it (the reader keeps it). */
int inbound_queue_put(struct inbound_queue *q, struct app *app, const char *location_id, const char *raw,
    size_t len);

#endif
