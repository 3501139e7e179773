/*
 * lease.c - hash table of leases by message id, with per-holder lists.
 *
 * Chained buckets, grown at load factor 1: acks look leases up by id at
 * every request, so lookups must not degrade with a large window.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "broker/lease.h"

static size_t
lease_bucket(const LeaseTable *t, uint64_t id)
{
	/* Ids are sequential; mix them so neighbours spread out. */
	id *= UINT64_C(0x9E3779B97F4A7C15);
	return (size_t)(id >> 32) & (t->n_buckets - 1);
}

void
lease_table_init(LeaseTable *t)
{
	t->buckets = NULL;
	t->n_buckets = 0;
	t->count = 0;
}

void
lease_table_release(LeaseTable *t)
{
	for (size_t i = 0; i < t->n_buckets; i++) {
		Lease *l = t->buckets[i];
		while (l) {
			Lease *next = l->hash_next;
			free(l);
			l = next;
		}
	}
	free(t->buckets);
	lease_table_init(t);
}

static int
lease_table_grow(LeaseTable *t)
{
	size_t n = t->n_buckets ? t->n_buckets * 2 : 256;
	Lease **b = calloc(n, sizeof(*b));
	LeaseTable nt = {b, n, t->count};

	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < t->n_buckets; i++) {
		Lease *l = t->buckets[i];
		while (l) {
			Lease *next = l->hash_next;
			size_t k = lease_bucket(&nt, l->msg_id);
			l->hash_next = b[k];
			b[k] = l;
			l = next;
		}
	}
	free(t->buckets);
	*t = nt;
	return 0;
}

Lease *
lease_find(const LeaseTable *t, uint64_t msg_id)
{
	if (!t->n_buckets)
		return NULL;
	for (Lease *l = t->buckets[lease_bucket(t, msg_id)]; l;
	     l = l->hash_next)
		if (l->msg_id == msg_id)
			return l;
	return NULL;
}

int
lease_add(LeaseTable *t, LeaseList *list, uint64_t msg_id, int64_t mailbox_id,
	  void *holder, int64_t deadline_ns)
{
	Lease *l;
	size_t k;

	if (lease_find(t, msg_id))
		return -EEXIST;
	if (t->count >= t->n_buckets && lease_table_grow(t) < 0)
		return -ENOMEM;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->msg_id = msg_id;
	l->mailbox_id = mailbox_id;
	l->holder = holder;
	l->deadline_ns = deadline_ns;
	k = lease_bucket(t, msg_id);
	l->hash_next = t->buckets[k];
	t->buckets[k] = l;
	t->count++;
	l->prev = list->tail;
	if (list->tail)
		list->tail->next = l;
	else
		list->head = l;
	list->tail = l;
	list->count++;
	return 0;
}

void
lease_remove(LeaseTable *t, LeaseList *list, Lease *l)
{
	Lease **pp = &t->buckets[lease_bucket(t, l->msg_id)];

	while (*pp && *pp != l)
		pp = &(*pp)->hash_next;
	if (*pp) {
		*pp = l->hash_next;
		t->count--;
	}
	if (l->prev)
		l->prev->next = l->next;
	else
		list->head = l->next;
	if (l->next)
		l->next->prev = l->prev;
	else
		list->tail = l->prev;
	list->count--;
	free(l);
}
