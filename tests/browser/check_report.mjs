// Opens a report page in headless Chromium, takes a full-page screenshot, and fails on
// console errors, page errors, failed requests (the page must need none) or charts that
// did not render. Usage: node check_report.mjs PAGE.html SCREENSHOT.png MIN_CHARTS
import { chromium } from "playwright-core";
import { pathToFileURL } from "node:url";

const [page_path, screenshot, min_charts_text] = process.argv.slice(2);
if (!page_path || !screenshot) {
  console.error("usage: node check_report.mjs PAGE.html SCREENSHOT.png [MIN_CHARTS]");
  process.exit(2);
}
const min_charts = Number(min_charts_text ?? "1");
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") {
      problems.push(`console ${message.type()}: ${message.text()}`);
    }
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("request", (request) => {
    if (!request.url().startsWith("file:")) {
      problems.push(`the page requested ${request.url()}`);
    }
  });
  page.on("requestfailed", (request) => problems.push(`request failed: ${request.url()}`));
  await page.goto(pathToFileURL(page_path).href, { waitUntil: "load" });
  const charts = await page.$$eval("figure.chart", (figures) =>
    figures.map((figure) => {
      const svg = figure.querySelector("svg");
      const box = svg ? svg.getBoundingClientRect() : null;
      return {
        title: figure.dataset.chart,
        width: box ? box.width : 0,
        height: box ? box.height : 0,
        // A drawn chart has lines or markers, not only its frame.
        shapes: svg ? svg.querySelectorAll("polyline, path, circle, polygon").length : 0,
      };
    }),
  );
  for (const chart of charts) {
    if (chart.width < 100 || chart.height < 100 || chart.shapes < 3) {
      problems.push(`chart "${chart.title}" did not render (${JSON.stringify(chart)})`);
    }
  }
  if (charts.length < min_charts) {
    problems.push(`${charts.length} charts on the page, expected at least ${min_charts}`);
  }
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ charts: charts.length, problems }));
} finally {
  await browser.close();
}
process.exit(problems.length === 0 ? 0 : 1);
