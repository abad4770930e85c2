/* imap_sink: what the IMAP watcher needs from its owner, and nothing
 * more (OpenSMTPD's smtp.h shape: the transport calls back, the owner
 * implements). The watcher reads mail and hands each message over; the
 * owner decides what it means, keeps the per-mailbox marks (UID
 * checkpoints) durably and hears the watcher's state. The watcher knows
 * nothing of HighLevel, the store or the configuration. */
#ifndef MB_IMAP_SINK_H
#define MB_IMAP_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tls_mode.h"

/* One watched mailbox. Borrowed: outlives the watcher. */
struct imap_mailbox {
	const char *id;            /* the owner's name for it (a location id): logs and callbacks */
	const char *host;
	long port;
	enum tls_mode tls;
	bool tls_verify;
	const char *ca_file;
	const char *user, *password;
	const char *folder;
	const char *after;         /* "seen" | "none" | "move:<folder>" */
	bool idle;                 /* use IDLE when offered (else poll) */
	long idle_interval;        /* seconds before IDLE is re-issued */
	long poll_interval;        /* seconds between polls without IDLE */
	long reread_days;          /* after a UIDVALIDITY change, mail this recent is read again */
};

/* Where a mailbox's reading stands. rescan_upto: after a UIDVALIDITY
 * change, the new UIDs up to it are the old mail renumbered. */
struct imap_mark {
	uint32_t uidvalidity;
	uint32_t last_uid;
	uint32_t rescan_upto;
};

enum imap_delivery {
	IMAP_DELIVERED,            /* recorded (posted, skipped or failed for good): move on */
	IMAP_RETRY,                /* not recorded: read it again later, the mark stays before it */
};

struct imap_sink {
	void *ctx;
	/* one message, whole; called from a watcher worker thread */
	enum imap_delivery (*deliver)(void *ctx, const char *id, const char *raw, size_t len);
	/* 1 with *m, 0 when the mailbox was never read, -1 on trouble */
	int (*mark_get)(void *ctx, const char *id, struct imap_mark *m);
	/* 0, or -1: the watcher then stops and reconnects later, the
	 * messages after the last durable mark are read again (the owner
	 * dedupes) */
	int (*mark_put)(void *ctx, const char *id, const struct imap_mark *m);
	/* "idling" | "polling" | "backing off" | "stopped", and why */
	void (*status)(void *ctx, const char *id, const char *state, const char *detail);
	/* while the owner wants the mailbox left alone (checked each round,
	 * and on imap_watch_poke): why, for the log; NULL to go on */
	const char *(*paused)(void *ctx, const char *id);
};

#endif
