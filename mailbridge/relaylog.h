/* relaylog: what the log of the Postfix beside us says about a message we
 * handed it. When an SMTP session ends between our final dot and the
 * relay's reply (mailbridge killed, or the relay stopped), the session
 * cannot tell whether the relay kept the message; the relay's log can.
 * Postfix's cleanup logs "QUEUEID: message-id=<X>" while receiving, and
 * qmgr logs "QUEUEID: from=<...>" only once the queue file is committed,
 * so a message-id line followed by its queue id's qmgr line means kept.
 * Only that pair counts: a transaction that was aborted has the first
 * line and not the second. And only with our envelope sender on the qmgr
 * line: a mail that merely carries our Message-ID (anyone can write one)
 * is not our submission. */
#ifndef MB_RELAYLOG_H
#define MB_RELAYLOG_H

#include <stddef.h>

/* At most this much of the log's end is read: the attempt in question is
 * recent, and a busy server's log is large. */
#define RELAYLOG_TAIL (64L * 1024 * 1024)

/* Looks for message_id (without <>) submitted with envelope_from in the
 * log at path. Returns 1 with *queue_id_r (malloc'd) when Postfix committed
 * it, 0 when the log does not show that, -1 when the log cannot be read
 * (errno set). */
int relaylog_find(const char *path, const char *message_id, const char *envelope_from, char **queue_id_r);

#endif
