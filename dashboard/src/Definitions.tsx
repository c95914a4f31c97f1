// The saga definitions: each version's steps as a graph (kinds, participants, the
// compensations that undo them, optional and approval steps) and its sagas by status.
import {
  Background,
  Controls,
  type Edge,
  Handle,
  MarkerType,
  type Node,
  type NodeProps,
  Position,
  ReactFlow,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { Link, useParams } from "react-router";
import { api, type Definition, type DefinitionStep, STATUSES } from "./api";
import { useDark } from "./charts/EChart";
import { statusLabel } from "./format";
import { Panel } from "./Panels";
import { searchLink } from "./Overview";
import { keys, usePolled } from "./queries";

const KIND_WORDS: Record<DefinitionStep["kind"], string> = {
  compensatable: "compensatable",
  pivot: "pivot: the go/no-go point",
  retriable: "retriable: retried until it succeeds",
  approval: "approval: a person decides",
};

type StepData = { step: DefinitionStep };
type EndData = { label: string };

function StepNode({ data }: NodeProps<Node<StepData>>) {
  const { step } = data;
  return (
    <div className={`flow-step kind-${step.kind}${step.optional ? " optional" : ""}`}>
      <Handle type="target" position={Position.Left} />
      <strong>{step.name}</strong>
      <span className="kind">{KIND_WORDS[step.kind]}</span>
      {step.kind === "approval" ? (
        <span>
          waits {step.timeout_s / 3600} h, then {step.on_timeout}
        </span>
      ) : (
        <span>
          do: {step.participant}.{step.command}
        </span>
      )}
      {step.compensation && (
        <span>
          undo: {step.participant}.{step.compensation}
        </span>
      )}
      {step.optional && <span className="tag">optional: runs when a rule requires it</span>}
      <Handle type="source" position={Position.Right} />
      {step.compensation && <Handle type="source" position={Position.Bottom} id="undo" />}
    </div>
  );
}

function EndNode({ data }: NodeProps<Node<EndData>>) {
  return (
    <div className="flow-end">
      <Handle type="target" position={Position.Left} />
      <Handle type="target" position={Position.Top} id="undo" />
      {data.label}
      <Handle type="source" position={Position.Right} />
    </div>
  );
}

const NODE_TYPES = { step: StepNode, end: EndNode };
const STAGE_X = 250;
const ROW_Y = 150;

/** The graph: start, each stage a column (a parallel group's steps one above the other),
 * done; a dashed edge from each step with a compensation to "compensated" below. */
export function definitionGraph(stages: DefinitionStep[][]): { nodes: Node[]; edges: Edge[] } {
  const nodes: Node[] = [{ id: "start", type: "end", position: { x: 0, y: 0 }, data: { label: "start" } }];
  const edges: Edge[] = [];
  let previous = ["start"];
  stages.forEach((stage, column) => {
    const ids = stage.map((step, row) => {
      const id = `step-${step.name}`;
      const y = (row - (stage.length - 1) / 2) * ROW_Y;
      nodes.push({ id, type: "step", position: { x: STAGE_X * (column + 1) - 100, y: y - 40 }, data: { step } });
      return id;
    });
    for (const from of previous) {
      for (const to of ids) edges.push({ id: `${from}->${to}`, source: from, target: to, markerEnd: { type: MarkerType.ArrowClosed } });
    }
    previous = ids;
  });
  const end = STAGE_X * (stages.length + 1);
  nodes.push({ id: "done", type: "end", position: { x: end - 60, y: 0 }, data: { label: "done" } });
  for (const from of previous) edges.push({ id: `${from}->done`, source: from, target: "done", markerEnd: { type: MarkerType.ArrowClosed } });
  const undone = stages.flat().filter((step) => step.compensation);
  if (undone.length) {
    const tallest = Math.max(...stages.map((stage) => stage.length));
    nodes.push({ id: "undone", type: "end", position: { x: STAGE_X, y: (tallest / 2) * ROW_Y + 80 }, data: { label: "compensated" } });
    for (const step of undone) {
      edges.push({
        id: `step-${step.name}->undone`,
        source: `step-${step.name}`,
        sourceHandle: "undo",
        target: "undone",
        targetHandle: "undo",
        label: step.compensation ?? "",
        className: "undo",
        markerEnd: { type: MarkerType.ArrowClosed },
      });
    }
  }
  return { nodes, edges };
}

function Graph({ definition }: { definition: Definition }) {
  const dark = useDark();
  if (!definition.stages) return <p className="empty">This admin API does not know this version's steps.</p>;
  const { nodes, edges } = definitionGraph(definition.stages);
  return (
    <div className="flow" role="figure" aria-label={`The steps of ${definition.name} v${definition.version}`}>
      <ReactFlow
        nodes={nodes}
        edges={edges}
        nodeTypes={NODE_TYPES}
        colorMode={dark ? "dark" : "light"}
        fitView
        nodesDraggable={false}
        nodesConnectable={false}
        elementsSelectable={false}
        proOptions={{ hideAttribution: false }}
      >
        <Background />
        <Controls showInteractive={false} />
      </ReactFlow>
    </div>
  );
}

function Counts({ definition }: { definition: Definition }) {
  return (
    <dl className="stats">
      {STATUSES.map((status) => (
        <div key={status} className={`stat status-${status}`}>
          <dt>{statusLabel(status)}</dt>
          <dd>
            <Link to={searchLink({ definition: definition.name, version: definition.version, status })}>
              {definition.counts[status] ?? 0}
            </Link>
          </dd>
        </div>
      ))}
    </dl>
  );
}

export function DefinitionPage() {
  const { name = "", version = "" } = useParams();
  const number = Number(version);
  const loaded = usePolled(keys.definition(name, number), () => api.definition(name, number));
  return (
    <Panel id="definition" title={`${name} v${version}`} loaded={loaded} wide>
      {(definition) => (
        <>
          <p>
            <Link to="/definitions">← All definitions</Link>
          </p>
          <h3>Sagas by status ({definition.total})</h3>
          <Counts definition={definition} />
          <h3>Steps</h3>
          <Graph definition={definition} />
          {definition.mermaid && (
            <details>
              <summary>As a Mermaid flowchart</summary>
              <pre>{definition.mermaid}</pre>
            </details>
          )}
        </>
      )}
    </Panel>
  );
}

export function DefinitionsPage() {
  const loaded = usePolled(keys.definitions, api.definitions);
  return (
    <Panel id="definitions" title="Definitions" loaded={loaded} wide>
      {({ items }) =>
        items.length === 0 ? (
          <p className="empty">None.</p>
        ) : (
          <table>
            <caption className="visually-hidden">Saga definitions and their sagas by status</caption>
            <thead>
              <tr>
                <th scope="col">Definition</th>
                <th scope="col">Sagas</th>
                {STATUSES.map((status) => (
                  <th key={status} scope="col">
                    {statusLabel(status)}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {items.map((item) => (
                <tr key={`${item.name}/${item.version}`}>
                  <td>
                    <Link to={`/definitions/${encodeURIComponent(item.name)}/${item.version}`}>
                      {item.name} v{item.version}
                    </Link>
                    {!item.known && <span className="note"> (steps unknown here)</span>}
                  </td>
                  <td>{item.total}</td>
                  {STATUSES.map((status) => (
                    <td key={status}>{item.counts[status] ?? 0}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        )
      }
    </Panel>
  );
}
