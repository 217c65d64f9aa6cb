/* manager.h - the one process-wide manager thread: epoll loop, timers, and a
 * helper thread for the rare work that must block (libpq < 17 cancel). */
#ifndef DBPOOL_MANAGER_H
#define DBPOOL_MANAGER_H

#include <stdint.h>

struct dbpool;
struct dbpool_slot;

/* Start the manager if needed and add the pool to it. 0 or DBPOOL_ESYSTEM. */
int manager_attach(struct dbpool *p);
/* dbpool_close(): detach the pool, close every connection not checked out,
 * fail waiters. Returns 0, DBPOOL_EBUSY (leases out) or DBPOOL_EINVAL. */
int manager_close(struct dbpool *p);
/* The last lease of a closed pool came back: free the pool safely. */
void manager_release_closed(struct dbpool *p);

/* Is the manager running (some pool open or still holding leases)? */
int manager_in_use(void);

/* Make the manager run now (any pool due). */
void manager_wake(void);
/* Make the manager service pool p now / if p's new deadline `due` is earlier
 * than the one the manager planned for p. */
void manager_poke(struct dbpool *p);
void manager_poke_before(struct dbpool *p, int64_t due);
/* Is the calling thread the manager (callbacks run there)? */
int manager_is_self(void);

/* epoll registration of a manager-owned slot's fd (manager thread only). */
void manager_watch(struct dbpool_slot *s, int fd, int want);
void manager_unwatch(struct dbpool_slot *s);

/* A function the manager calls on every loop iteration (at least once a
 * second while it runs), with the manager mutex held: it must be quick, must
 * not lock a pool mutex, and hands blocking work to manager_submit(). */
int manager_ticker_add(void (*fn)(void *arg, int64_t now), void *arg);
void manager_ticker_remove(void *arg);

/* Run fn(arg) on the helper thread; free_fn(arg) after (or instead, at stop). */
int manager_submit(void (*fn)(void *), void *arg, void (*free_fn)(void *));

#endif
