/* store_copy: a stopped store's rows into another (`mailbridge store
 * migrate`: from a single instance's SQLite file to the PostgreSQL that
 * several instances will share). */
#ifndef MB_STORE_COPY_H
#define MB_STORE_COPY_H

#include <stdint.h>

#include "store.h"

/* Every row of every table (not the instances and their leases: whoever
 * starts on `to` names itself anew) from `from` into `to`, which must be
 * at the same schema and hold no job yet; each table in one transaction,
 * then `to`'s id sequences past the copied ids. fn hears each table done.
 * 1, or -1 with *error_r (malloc'd). */
int store_copy(struct store *from, struct store *to, void (*fn)(const char *table, int64_t rows, void *arg),
    void *arg, char **error_r);

#endif
