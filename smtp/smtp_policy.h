/* smtp_policy: what an SMTP result means for each recipient, apart from
 * the conversation itself (like Postfix's smtp_trouble.c).
 *
 * Rules: 2xx = sent; 4xx, no reply, TLS or connection trouble = temporary
 * (retry); 5xx = permanent for that recipient. Trouble before MAIL FROM
 * (connect, EHLO, STARTTLS, certificate, AUTH) is about the relay or our
 * configuration, never about the message: always temporary, so a fixed
 * relay or password delivers what queued meanwhile. A 4xx never becomes a
 * failure here; only the queue lifetime turns "temporary" into failed. */
#ifndef MB_SMTP_POLICY_H
#define MB_SMTP_POLICY_H

#include "smtp_client.h"

enum smtp_outcome { SMTP_OUT_SENT, SMTP_OUT_TEMP, SMTP_OUT_PERM };

/* Outcome of one reply code seen at a stage at or after MAIL. */
enum smtp_outcome smtp_policy_code(int code);

/* Outcome for envelope recipient i of a finished smtp_send; *reply_r is
 * the reply that decided it (borrowed from res). */
enum smtp_outcome smtp_policy_rcpt(const struct smtp_result *res, size_t i,
    const struct smtp_reply **reply_r);

#endif
