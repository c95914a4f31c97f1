// The actions an operator may take on one saga, and on several at once.
import { api, type BulkAction, type SagaAction } from "./api";
import type { ActionSpec } from "./Actions";

const capital = (name: string) => name.charAt(0).toUpperCase() + name.slice(1);

export function sagaActions(sagaId: string, subject: string, names: SagaAction[]): ActionSpec[] {
  return names.map((name) => {
    const label = capital(name);
    return {
      name,
      label,
      run: async (note: string) => {
        const answer = await api.act(sagaId, name, note);
        if (!answer.accepted) throw new Error(`${label} was not accepted for ${subject}`);
        return `${label} queued for ${subject}`;
      },
    };
  });
}

export const BULK_ACTIONS: BulkAction[] = ["retry", "compensate", "resolve"];

/** One action for every selected saga; each lands in that saga's log with who and why. */
export function bulkActions(sagaIds: string[], done: () => void): ActionSpec[] {
  return BULK_ACTIONS.map((name) => ({
    name,
    label: `${capital(name)} selected`,
    run: async (note: string) => {
      const { accepted, unknown } = await api.bulk(name, sagaIds, note);
      done();
      const gone = unknown.length ? ` (${unknown.length} no longer found)` : "";
      return `${capital(name)} queued for ${accepted.length} saga${accepted.length === 1 ? "" : "s"}${gone}`;
    },
  }));
}
