import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { adoptToken } from "./api";
import { App } from "./App";
import "./styles.css";

adoptToken();
const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}
