// Operator actions: a button per action, then a short form for the note (the "why" the
// saga's log records). Renders nothing at all for a viewer.
import { type FormEvent, useContext, useState } from "react";
import { NOTE_MAX, NOTE_REQUIRED } from "./api";
import { asApiError } from "./hooks";
import { describeError, SessionContext } from "./session";

export interface ActionSpec {
  /** The API's name for it: retry, compensate, resolve, approve, reject, replay. */
  name: string;
  label: string;
  /** Does it; resolves to the sentence that tells the operator it was accepted. */
  run: (note: string) => Promise<string>;
}

export function Actions({ subject, actions }: { subject: string; actions: ActionSpec[] }) {
  const { canAct, notify } = useContext(SessionContext);
  const [open, setOpen] = useState<ActionSpec | null>(null);
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  if (!canAct) return null;

  if (open === null) {
    return (
      <div className="actions">
        {actions.map((action) => (
          <button
            key={action.name}
            type="button"
            className={`action ${action.name}`}
            onClick={() => {
              setOpen(action);
              setNote("");
              setError(undefined);
            }}
          >
            {action.label}
          </button>
        ))}
      </div>
    );
  }

  const action = open;
  const required = NOTE_REQUIRED.has(action.name);
  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    if (required && !note.trim()) {
      setError(`${action.label} needs a note saying why.`);
      return;
    }
    setBusy(true);
    try {
      notify({ kind: "done", text: await action.run(note) });
      setOpen(null);
    } catch (failed) {
      const text = describeError(asApiError(failed));
      setError(text);
      notify({ kind: "error", text: `${action.label} ${subject}: ${text}` });
    } finally {
      setBusy(false);
    }
  }
  return (
    <form className="action-form" aria-label={`${action.label} ${subject}`} onSubmit={submit}>
      <label>
        Note {required ? "(required)" : "(optional)"}
        <textarea
          value={note}
          onChange={(event) => setNote(event.target.value)}
          required={required}
          maxLength={NOTE_MAX}
          rows={2}
        />
      </label>
      <div className="actions">
        <button type="submit" className={`action ${action.name}`} disabled={busy}>
          Confirm {action.label.toLowerCase()}
        </button>
        <button type="button" onClick={() => setOpen(null)}>
          Cancel
        </button>
      </div>
      {error && <p role="alert">{error}</p>}
    </form>
  );
}
