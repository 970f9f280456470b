import { describe } from 'vitest';
import { leaseStoreContract } from '../support/lease-store-contract.js';
import { MemoryLeaseStore } from '../support/memory-lease-store.js';

// The in-memory store the manager's and watcher's unit tests use, held to the contract a real etcd passes (test/integration/etcd-store.test.ts).
describe('MemoryLeaseStore keeps the LeaseStore contract', () => {
  const store = new MemoryLeaseStore();
  leaseStoreContract(() => ({
    store,
    putRaw: async (subnetKey, value) => store.putRecord(subnetKey, value),
    compact: async () => store.compact(),
  }));
});
