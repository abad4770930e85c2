/* mailboxes: the core's side of the IMAP watcher (imap/imap_sink.h). It
 * lists the configured mailboxes for the watcher and implements the sink:
 * a message is handed to inbound, marks are the store's UID checkpoints,
 * the watcher's state goes to the store for `accounts`, and a location
 * whose app was uninstalled is paused. */
#ifndef MB_MAILBOXES_H
#define MB_MAILBOXES_H

#include "imap_sink.h"

struct app;
struct config;
struct location_config;
struct mailboxes;

/* The core's sink for app, and what the watcher needs of one location:
 * what mailboxes_start gives the watcher (the fuzz target drives one
 * session with them). */
void mailboxes_sink_init(struct imap_sink *sink, struct app *app);
void mailboxes_mailbox_init(struct imap_mailbox *box, const struct config *cfg, const struct location_config *loc);

/* Starts watching every location with imap_host; sets app->imap and
 * registers the watcher's gauges with metrics. */
struct mailboxes *mailboxes_start(struct app *app, int workers);
/* Stops the watcher (app->imap goes NULL) and frees. NULL is fine. */
void mailboxes_stop(struct mailboxes *mb);

#endif
