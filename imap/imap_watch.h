/* imap_watch: every configured mailbox watched from one process. One
 * reactor thread waits on all idling sockets at once (epoll) and on one
 * timer per mailbox; a small pool of workers runs the blocking libetpan
 * work (imap_session.c). A mailbox belongs to exactly one thread at a
 * time: the reactor while it idles or waits, a worker while it works.
 * Reconnects back off with jitter, forever; one dead server never stops
 * the others; start-up is paced per server (connect_rate logins a second
 * to each host and port, servers in parallel). */
#ifndef MB_IMAP_WATCH_H
#define MB_IMAP_WATCH_H

#include <stddef.h>

#include "imap_sink.h"

struct imap_watch;

/* Watches n mailboxes (borrowed, with the sink, until imap_watch_stop). */
struct imap_watch *imap_watch_start(const struct imap_mailbox *boxes, size_t n, const struct imap_sink *sink,
    int workers, int connect_rate);
void imap_watch_stop(struct imap_watch *w);
/* Asks the mailbox named id to look again soon at whether it is paused
 * (the owner's mind changed: another instance took it, or it is ours
 * now). Any thread. */
void imap_watch_poke(struct imap_watch *w, const char *id);
/* Mailboxes connected (idling or polling) right now. */
size_t imap_watch_connected(struct imap_watch *w);
size_t imap_watch_count(const struct imap_watch *w);

#endif
