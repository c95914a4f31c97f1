// One ECharts chart: drawn as SVG (crisp, and no inline styles or scripts for a strict
// content policy), resized with its box, themed light or dark with the page, and
// described in words (through ECharts' aria) from the data it is given to draw.
import { BarChart, CustomChart, LineChart } from "echarts/charts";
import {
  AriaComponent,
  DataZoomComponent,
  GridComponent,
  LegendComponent,
  MarkLineComponent,
  TooltipComponent,
} from "echarts/components";
import * as echarts from "echarts/core";
import { SVGRenderer } from "echarts/renderers";
import { useEffect, useRef, useSyncExternalStore } from "react";

echarts.use([
  BarChart,
  LineChart,
  CustomChart,
  AriaComponent,
  DataZoomComponent,
  GridComponent,
  LegendComponent,
  MarkLineComponent,
  TooltipComponent,
  SVGRenderer,
]);

export type ChartOption = echarts.EChartsCoreOption;

const DARK = "(prefers-color-scheme: dark)";

/** Whether the page is dark now, following the system's setting as it changes. */
export function useDark(): boolean {
  return useSyncExternalStore(
    (changed) => {
      const query = window.matchMedia?.(DARK);
      query?.addEventListener("change", changed);
      return () => query?.removeEventListener("change", changed);
    },
    () => window.matchMedia?.(DARK).matches ?? false,
  );
}

interface Item {
  name?: string;
  value?: unknown;
}

/** The chart's data in words, from the series it is given: "<series>: <name> <value>;
 * ... ." (a screen reader's alternative to the picture, and what the tests read). */
export function describeSeries(option: ChartOption, most = 60): string {
  const series = (Array.isArray(option.series) ? option.series : [option.series]) as Array<{ name?: string; data?: Item[] }>;
  return series
    .filter((one) => one?.data?.length)
    .map((one) => {
      const items = (one.data ?? []).slice(0, most).map((item) => `${item.name ?? ""} ${String(item.value)}`.trim());
      const more = (one.data?.length ?? 0) > most ? `; and ${(one.data?.length ?? 0) - most} more` : "";
      return `${one.name ?? "data"}: ${items.join("; ")}${more}.`;
    })
    .join(" ");
}

export interface EChartProps {
  option: ChartOption;
  /** The chart's name for a screen reader, before ECharts' description of its data. */
  title: string;
  className?: string;
  /** Say this instead of ECharts' description of the data (for data too long to read). */
  description?: string;
  onPick?: (dataIndex: number, seriesIndex: number) => void;
}

export function EChart({ option, title, className = "chart", description, onPick }: EChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const chart = useRef<echarts.ECharts | null>(null);
  const picked = useRef(onPick);
  picked.current = onPick;
  const dark = useDark();

  useEffect(() => {
    const element = box.current;
    if (!element) return undefined;
    const drawn = echarts.init(element, dark ? "dark" : undefined, { renderer: "svg" });
    chart.current = drawn;
    drawn.on("click", (params) => {
      const { dataIndex, seriesIndex } = params as { dataIndex?: number; seriesIndex?: number };
      if (dataIndex !== undefined) picked.current?.(dataIndex, seriesIndex ?? 0);
    });
    const resized = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => drawn.resize());
    resized?.observe(element);
    return () => {
      resized?.disconnect();
      drawn.dispose();
      chart.current = null;
    };
  }, [dark]);

  useEffect(() => {
    chart.current?.setOption(
      {
        backgroundColor: "transparent",
        aria: {
          enabled: true,
          label: { description: `${title}. ${description ?? describeSeries(option)}` },
        },
        ...option,
      },
      { notMerge: true },
    );
  }, [option, title, description, dark]);

  return <div ref={box} className={className} role="img" aria-label={title} data-chart={title} />;
}
