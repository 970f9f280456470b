/** What the lab reports to its user: a bad option, or a step of making or changing a lab that failed. */
export class LabError extends Error {
  override name = 'LabError';
}
