/*
 * lease.h - the messages currently leased to connections.
 *
 * The holder, deadline and window of a lease live only here; the store
 * keeps a row per lease (schema version 4) only so that a restart can
 * count the delivery of each lease it voids. Each lease is in a hash table by
 * message id (for ACK/NACK), on its holder's list (to give everything
 * back when the holder disconnects) and in its mailbox's group (to void
 * them when the mailbox is deleted, without a walk of every lease).
 */
#ifndef MBOX_BROKER_LEASE_H
#define MBOX_BROKER_LEASE_H

#include <stddef.h>
#include <stdint.h>

#define LEASE_LEN_UNKNOWN UINT64_MAX

typedef struct Lease Lease;
typedef struct LeaseList LeaseList;
typedef struct LeaseGroup LeaseGroup;
struct Lease {
	uint64_t msg_id;
	int64_t mailbox_id;
	void *holder;	     /* the Conn that holds it; NULL while parked */
	void *sub;	     /* the subscription it counts against, or NULL */
	uint64_t lease_ms;   /* length it was granted with (TOUCH, CLAIM) */
	uint64_t msg_len;    /* bytes of data delivered, or LEASE_LEN_UNKNOWN */
	int64_t deadline_ns; /* CLOCK_REALTIME ns when it runs out */
	LeaseList *list;     /* the list it is on */
	Lease *hash_next;
	Lease *prev, *next; /* on list */
	size_t heap_index;  /* position in the deadline heap */
	LeaseGroup *group;  /* the leases of its mailbox */
	/* The broker's flush_gen when it was made by a delivery phase; 0
	 * for leases restored after a failed batch. */
	uint64_t flush_gen;
	Lease *group_prev, *group_next;
};

typedef struct LeaseTable {
	Lease **buckets;
	size_t n_buckets; /* power of two */
	size_t count;
	Lease **heap; /* min-heap by deadline_ns, count entries */
	size_t heap_cap;
	LeaseGroup **groups;	/* by mailbox id, chained */
	size_t n_group_buckets; /* power of two */
	size_t n_groups;
} LeaseTable;

/* A list of leases of one holder. */
struct LeaseList {
	Lease *head, *tail;
	size_t count;
};

void lease_table_init(LeaseTable *t);
void lease_table_release(LeaseTable *t);
/* Add a lease for msg_id to t and to the end of list; -ENOMEM, -EEXIST.
 * Returns the new lease in *out (may be NULL). */
int lease_add(LeaseTable *t, LeaseList *list, uint64_t msg_id,
	      int64_t mailbox_id, void *holder, int64_t deadline_ns,
	      Lease **out);
Lease *lease_find(const LeaseTable *t, uint64_t msg_id);
/* Unlink from t and its list and free it. */
void lease_remove(LeaseTable *t, Lease *l);
/* Move l to the end of list, now held by holder. */
void lease_move(Lease *l, LeaseList *list, void *holder);
/* Change the deadline of l (keeps the heap in order). */
void lease_set_deadline(LeaseTable *t, Lease *l, int64_t deadline_ns);
/* The lease that runs out first, or NULL. */
Lease *lease_first_deadline(const LeaseTable *t);
/* A lease of a message of mailbox_id, or NULL if it has none: in time
 * proportional to that mailbox's leases, not all of them. */
Lease *lease_first_of_mailbox(const LeaseTable *t, int64_t mailbox_id);

#endif
