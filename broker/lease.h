/*
 * lease.h - the messages currently leased to connections.
 *
 * Leases live only in memory: after a restart every one is void (the
 * store turns LEASED rows back to READY). Each lease is in a hash table by
 * message id (for ACK/NACK) and on its holder's list (to give everything
 * back when the holder disconnects).
 */
#ifndef MBOX_BROKER_LEASE_H
#define MBOX_BROKER_LEASE_H

#include <stddef.h>
#include <stdint.h>

typedef struct Lease Lease;
struct Lease {
	uint64_t msg_id;
	int64_t mailbox_id;
	void *holder;	     /* the Conn that holds it */
	int64_t deadline_ns; /* CLOCK_REALTIME ns when it runs out */
	Lease *hash_next;
	Lease *prev, *next; /* holder's list */
	size_t heap_index;  /* position in the deadline heap */
};

typedef struct LeaseTable {
	Lease **buckets;
	size_t n_buckets; /* power of two */
	size_t count;
	Lease **heap; /* min-heap by deadline_ns, count entries */
	size_t heap_cap;
} LeaseTable;

/* A list of leases of one holder. */
typedef struct LeaseList {
	Lease *head, *tail;
	size_t count;
} LeaseList;

void lease_table_init(LeaseTable *t);
void lease_table_release(LeaseTable *t);
/* Add a lease for msg_id to t and to list; -ENOMEM, -EEXIST. */
int lease_add(LeaseTable *t, LeaseList *list, uint64_t msg_id,
	      int64_t mailbox_id, void *holder, int64_t deadline_ns);
Lease *lease_find(const LeaseTable *t, uint64_t msg_id);
/* Unlink from t and list and free it. */
void lease_remove(LeaseTable *t, LeaseList *list, Lease *l);
/* The lease that runs out first, or NULL. */
Lease *lease_first_deadline(const LeaseTable *t);

#endif
