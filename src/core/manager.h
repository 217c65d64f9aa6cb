/* manager.h - the one process-wide manager thread: an epoll loop with timers
 * that services "clients" (pools, registries) and "watchers" (their sockets).
 * It knows nothing about pools (libuv style: handles and watchers). */
#ifndef DBPOOL_MANAGER_H
#define DBPOOL_MANAGER_H

#include "namespace.h"

#include <stdatomic.h>
#include <stdint.h>

#include "list.h"

struct mclient;

/*
 * One socket a client wants to hear about (embedded in the client's objects,
 * like libuv's uv__io_t). cb runs on the manager thread, with no manager lock
 * held, never after manager_detach() of its client returned.
 */
struct mwatch {
    int fd; /* -1 when not watched */
    int events;
    struct mclient *client;
    void (*cb)(struct mwatch *w, int64_t now);
};

/*
 * A serviced object. service() runs on the manager thread with no manager
 * lock held when the client is due (now >= next_due) or was poked, and after
 * any of its watchers fired (so a socket event that changes a deadline is
 * followed by a fresh due time at once). It returns the client's next due
 * time (INT64_MAX: only when poked). release() frees the client; it runs once,
 * after manager_release(), at a point where no event can still refer to it.
 */
struct mclient {
    struct list_node node; /* attached or detached list (manager lock) */
    struct mclient *rnext; /* release list (manager lock) */
    struct mclient *qnext; /* this pass's run list (manager thread only) */
    struct mclient *pnext; /* poke list (poke lock) */
    int heap_idx;          /* place in the due-time heap, -1: not in it (manager lock) */
    int queued;            /* on this pass's run list (manager thread only) */
    _Atomic int64_t next_due; /* written under the manager lock only */
    _Atomic int poke;         /* on the poke list */
    int attached; /* manager lock */
    int running;  /* manager lock: service() or a watcher's cb runs now */
    int64_t (*service)(struct mclient *c, int64_t now);
    void (*release)(struct mclient *c);
};

/* Start the manager thread if needed and service c from now on (due at
 * once). 0 or DBPOOL_ESYSTEM. Any thread but the manager's. */
int manager_attach(struct mclient *c);
/* Stop servicing c: when this returns, neither service() nor a watcher cb of
 * c runs or will run. Any thread (on the manager thread: not from c's own
 * callbacks). */
void manager_detach(struct mclient *c);
/* c (detached) is done: call c->release() once no pending event can refer to
 * it. The manager thread stops when the last client is released. */
void manager_release(struct mclient *c);

/* Service c now / if `due` is earlier than c's planned due time. Any thread. */
void manager_poke(struct mclient *c);
void manager_poke_before(struct mclient *c, int64_t due);

/* Watch w->fd for reading or writing (DBPOOL_IO_READ / DBPOOL_IO_WRITE), or
 * stop. The manager thread, or any thread once the client is detached. */
void manager_watch(struct mwatch *w, int fd, int want);
void manager_unwatch(struct mwatch *w);

/* How many fork()s this process is away from the one that first used the
 * library: an object that recorded a different value was inherited from a
 * parent process and must not touch its sockets or locks. */
unsigned manager_fork_gen(void);

/* Is the calling thread the manager (callbacks run there)? */
int manager_is_self(void);
/* Does the library hold threads or objects that use the allocator (a client
 * attached or not yet released, the manager or a worker thread alive)? */
int manager_in_use(void);

#endif
