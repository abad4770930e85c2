/* mailboxes: the core's side of the IMAP watcher (imap/imap_sink.h). It
 * lists the configured mailboxes for the watcher and implements the sink:
 * a message goes to the spool (inbound_queue.h) and is posted off the
 * watcher's threads, marks are the store's UID checkpoints,
 * the watcher's state goes to the store for `accounts`, and a location
 * whose app was uninstalled is paused. */
#ifndef MB_MAILBOXES_H
#define MB_MAILBOXES_H

#include <stdbool.h>

#include "imap_sink.h"

struct app;
struct config;
struct location_config;
struct mailboxes;

/* The core's sink for app, and what the watcher needs of one location:
 * what mailboxes_start gives the watcher (the fuzz target drives one
 * session with them). */
void mailboxes_mailbox_init(struct imap_mailbox *box, const struct config *cfg, const struct location_config *loc);

/* Starts watching every location with imap_host; sets app->imap and
 * registers the watcher's gauges with metrics. */
/* The mailboxes of app's configuration and their sink, nothing started
 * (what mailboxes_start starts on; fuzz_imap drives the sink alone). */
struct mailboxes *mailboxes_new(struct app *app);
/* doctor: logs in to the location's mailbox and selects its folder, as the
 * watcher would, and says whether IDLE is offered; nothing is read or
 * marked. 0 or -1, with what was found in *detail_r (malloc'd). */
int mailboxes_probe(const struct config *cfg, const struct location_config *loc, bool *idle_r, char **detail_r);
const struct imap_sink *mailboxes_sink(const struct mailboxes *mb);
/* Starts the posters (inbound_queue.h), then the watcher over every
 * location with a mailbox: posters post what the spool holds, imap_workers
 * run the watcher's logins, fetches and re-IDLEs. */
struct mailboxes *mailboxes_start(struct app *app, int posters, int imap_workers);
/* On a store shared by instances: renews the mailboxes this instance
 * reads, hands some over when there are more of us, takes free ones up to
 * an equal share (after an instance left, within two leases), and pokes
 * the watcher for each that changed hands. Each heartbeat; NULL is fine. */
void mailboxes_balance(struct mailboxes *mb);
/* Stops the watcher (app->imap goes NULL) and frees. NULL is fine. */
void mailboxes_stop(struct mailboxes *mb);

#endif
