import { describe, expect, it } from 'vitest';
import { headroomPortName } from '../../controller/dataplane/headroom.js';

describe("the pod bridges' headroom ports", () => {
  it('are named after their bridge, within the 15 characters a link name may have', () => {
    expect(headroomPortName('cni0')).toBe('twill-hr');
    expect(headroomPortName('br-pods')).toBe('twill-hr-br-pod');
    expect(headroomPortName('a-very-long-bridge').length).toBe(15);
    expect(new Set(['br1', 'br2'].map(headroomPortName)).size).toBe(2);
  });
});
