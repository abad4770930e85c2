/* tls_mode: how a mail connection gets TLS. Shared by the transport
 * (smtp/, imap/, netstream) and the configuration that chooses it, so the
 * transport needs nothing of the configuration. */
#ifndef MB_TLS_MODE_H
#define MB_TLS_MODE_H

enum tls_mode { TLS_MODE_NONE, TLS_MODE_STARTTLS, TLS_MODE_IMPLICIT };

#endif
